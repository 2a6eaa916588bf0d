-- Wireshark dissector for the sdx header (docs/PROTOCOL.md, "sdx header").
--
--   wireshark -X lua_script:tools/wireshark/sdx.lua capture.pcap
--   tshark -X lua_script:tools/wireshark/sdx.lua -r capture.pcap -V
--
-- sdx frames are UDP to one port, 7359 unless the stacks were told
-- otherwise (Edit > Preferences > Protocols > SDX, or
-- -o sdx.port:PORT). The dissector checks the fixed header's lengths and
-- flags a frame whose payload length or SACK count disagree with its
-- size; the CRC-32C is shown, not checked.

local sdx = Proto("sdx", "Sockets Direct over XDP")

local opcodes = {
	[1] = "connect", [2] = "accept", [3] = "reject", [4] = "data",
	[5] = "ack", [6] = "reset", [7] = "probe", [8] = "disconnect",
	[9] = "retry", [10] = "rdma write", [11] = "rdma read request",
	[12] = "rdma read response",
}
local reasons = {
	[0] = "none", [1] = "no listener", [2] = "backlog full",
	[3] = "no resources", [4] = "closed", [5] = "unknown connection",
	[6] = "timed out",
}

local f = sdx.fields
f.version = ProtoField.uint8("sdx.version", "Version")
f.opcode = ProtoField.uint8("sdx.opcode", "Opcode", base.DEC, opcodes)
f.flags = ProtoField.uint8("sdx.flags", "Flags", base.HEX)
f.flag_ack = ProtoField.bool("sdx.flags.ack", "ACK", 8, nil, 0x01)
f.flag_answer = ProtoField.bool("sdx.flags.answer", "ANSWER", 8, nil, 0x02)
f.flag_ackreq = ProtoField.bool("sdx.flags.ackreq", "ACKREQ", 8, nil, 0x04)
f.nsack = ProtoField.uint8("sdx.nsack", "SACK blocks")
f.checksum = ProtoField.uint32("sdx.checksum", "Checksum (CRC-32C)", base.HEX)
f.srcport = ProtoField.uint16("sdx.srcport", "Source port")
f.dstport = ProtoField.uint16("sdx.dstport", "Destination port")
f.srcconn = ProtoField.uint32("sdx.srcconn", "Source connection", base.HEX)
f.dstconn = ProtoField.uint32("sdx.dstconn", "Destination connection", base.HEX)
f.window = ProtoField.uint32("sdx.window", "Window")
f.token = ProtoField.uint64("sdx.token", "Token", base.HEX)
f.seq = ProtoField.uint64("sdx.seq", "Sequence")
f.ack = ProtoField.uint64("sdx.ack", "Acknowledgement")
f.len = ProtoField.uint16("sdx.len", "Payload length")
f.reason = ProtoField.uint8("sdx.reason", "Reason", base.DEC, reasons)
f.reserved = ProtoField.uint8("sdx.reserved", "Reserved")
f.sack_start = ProtoField.uint32("sdx.sack.start", "SACK start (from ack)")
f.sack_len = ProtoField.uint32("sdx.sack.len", "SACK length")
f.payload = ProtoField.bytes("sdx.payload", "Payload")

local e_short = ProtoExpert.new("sdx.short", "Shorter than the fixed header (52 bytes)", expert.group.MALFORMED, expert.severity.ERROR)
local e_len = ProtoExpert.new("sdx.badlen", "Length disagrees with the payload length and SACK count", expert.group.MALFORMED, expert.severity.ERROR)
local e_version = ProtoExpert.new("sdx.badversion", "Unknown version", expert.group.MALFORMED, expert.severity.ERROR)
local e_opcode = ProtoExpert.new("sdx.badopcode", "Unknown opcode", expert.group.MALFORMED, expert.severity.WARN)
sdx.experts = { e_short, e_len, e_version, e_opcode }

local HEADER, SACK = 52, 8

sdx.prefs.port = Pref.uint("UDP port", 7359, "the UDP port sdx frames go to")

function sdx.dissector(buf, pinfo, tree)
	local n = buf:len()
	pinfo.cols.protocol = "SDX"
	local t = tree:add(sdx, buf(0, n))
	if n < HEADER then
		-- A quote inside an ICMP error carries only the head of a frame.
		t:add_proto_expert_info(e_short)
		pinfo.cols.info = "sdx (cut short)"
		return n
	end
	local version = buf(0, 1):uint()
	local op = buf(1, 1):uint()
	local nsack = buf(3, 1):uint()
	local plen = buf(48, 2):uint()
	local vi = t:add(f.version, buf(0, 1))
	if version ~= 1 then vi:add_proto_expert_info(e_version) end
	local oi = t:add(f.opcode, buf(1, 1))
	if opcodes[op] == nil then oi:add_proto_expert_info(e_opcode) end
	local fl = t:add(f.flags, buf(2, 1))
	fl:add(f.flag_ack, buf(2, 1))
	fl:add(f.flag_answer, buf(2, 1))
	fl:add(f.flag_ackreq, buf(2, 1))
	t:add(f.nsack, buf(3, 1))
	t:add(f.checksum, buf(4, 4))
	t:add(f.srcport, buf(8, 2))
	t:add(f.dstport, buf(10, 2))
	t:add(f.srcconn, buf(12, 4))
	t:add(f.dstconn, buf(16, 4))
	t:add(f.window, buf(20, 4))
	t:add(f.token, buf(24, 8))
	t:add(f.seq, buf(32, 8))
	t:add(f.ack, buf(40, 8))
	t:add(f.len, buf(48, 2))
	t:add(f.reason, buf(50, 1))
	t:add(f.reserved, buf(51, 1))
	local want = HEADER + SACK * nsack + plen
	if want ~= n then
		t:add_proto_expert_info(e_len)
	end
	for i = 0, nsack - 1 do
		local o = HEADER + SACK * i
		if o + SACK > n then break end
		local s = t:add(buf(o, SACK), "SACK block " .. i)
		s:add(f.sack_start, buf(o, 4))
		s:add(f.sack_len, buf(o + 4, 4))
	end
	local po = HEADER + SACK * nsack
	if plen > 0 and po + plen <= n then
		t:add(f.payload, buf(po, plen))
	end
	local name = opcodes[op] or ("opcode " .. op)
	pinfo.cols.info = string.format("sdx %s %d -> %d conn %#x seq=%s ack=%s win=%d len=%d",
		name, buf(8, 2):uint(), buf(10, 2):uint(), buf(16, 4):uint(),
		tostring(buf(32, 8):uint64()), tostring(buf(40, 8):uint64()), buf(20, 4):uint(), plen)
	return n
end

local udp_port = DissectorTable.get("udp.port")
local registered = sdx.prefs.port
udp_port:add(registered, sdx)

function sdx.prefs_changed()
	if registered ~= sdx.prefs.port then
		udp_port:remove(registered, sdx)
		registered = sdx.prefs.port
		udp_port:add(registered, sdx)
	end
end
