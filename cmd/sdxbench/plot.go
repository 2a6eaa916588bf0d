package main

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/sdx-project/sdx/bench"
)

// The plot: the 64 B ping-pong round-trip CDF of every system, all repeats
// merged, on a log latency axis; on the left the whole CDF, on the right
// its tail (1 − CDF on a log axis, labelled in percentiles).

var (
	white   = color.RGBA{255, 255, 255, 255}
	ink     = color.RGBA{30, 30, 30, 255}
	gridCol = color.RGBA{222, 222, 222, 255}
	minor   = color.RGBA{240, 240, 240, 255}
)

// style is how a system's curve is drawn: a colour and a dash pattern
// (lengths in pixels along the curve, on and off in turn; nil: solid).
// Every system has a style of its own, and the styles differ in their
// dashes or, where two share a pattern, in lightness, so that the
// curves can be told apart printed in grey. The colours are the
// Okabe-Ito palette, which colour-blind readers can tell apart too.
type style struct {
	color color.RGBA
	dash  []float64
}

var (
	vermillion = color.RGBA{213, 94, 0, 255}
	orange     = color.RGBA{230, 159, 0, 255}
	purple     = color.RGBA{204, 121, 167, 255}
	blue       = color.RGBA{0, 72, 130, 255} // Okabe-Ito's blue, darkened: apart from vermillion in grey
	sky        = color.RGBA{86, 180, 233, 255}
	green      = color.RGBA{0, 158, 115, 255}
	black      = color.RGBA{0, 0, 0, 255}
	grey       = color.RGBA{120, 120, 120, 255}
	yellow     = color.RGBA{240, 228, 66, 255}

	solid   []float64
	dashed  = []float64{14, 6}
	dotted  = []float64{3, 5}
	dashDot = []float64{14, 5, 3, 5}
	long    = []float64{26, 8}
	dashDD  = []float64{14, 4, 3, 4, 3, 4}
	short   = []float64{7, 5}
	longDot = []float64{22, 5, 6, 5}
)

// systemStyle gives each system the same style in every plot: the sdx
// systems in warm colours, the kernel references in cool ones, the floor
// in black; the two-process ones dashed like nothing else.
var systemStyle = map[string]style{
	"sdx-conn":          {vermillion, solid},
	"sdx-conn-adaptive": {vermillion, dashed},
	"sdx-conn-1q":       {vermillion, dotted},
	"sdx-conn-2p":       {purple, long},
	"sdx-conn-2poll":    {yellow, dotted},
	"sdx-conn-2poll-2p": {yellow, long},
	"sdx-busy":          {orange, dashDot},
	"sdx-adaptive":      {orange, short},
	"tcp-gonet":         {blue, solid},
	"tcp-gonet-2p":      {blue, long},
	"tcp-spin":          {sky, dashDD},
	"udp-spin":          {green, longDot},
	"xsk-floor":         {black, dotted},
	"xsk-floor-park":    {black, dashed},
	"xsk-floor-sf":      {black, dashDot},
	"xsk-floor-2p":      {black, long},
}

// styleOf returns a system's style; one the table does not know is grey
// with a pattern picked from its name.
func styleOf(name string) style {
	if st, ok := systemStyle[name]; ok {
		return st
	}
	pats := [][]float64{solid, dashed, dotted, dashDot, long, dashDD, short, longDot}
	h := 0
	for _, r := range name {
		h = h*31 + int(r)
	}
	return style{grey, pats[(h%len(pats)+len(pats))%len(pats)]}
}

// curve is one system's CDF: latencies in µs and the fraction of
// transactions at or below each.
type curve struct {
	name  string
	style style
	x, q  []float64
	n     int64
}

// at returns the latency at which the curve reaches fraction q.
func (c curve) at(q float64) float64 {
	for i := range c.q {
		if c.q[i] >= q {
			return c.x[i]
		}
	}
	return c.x[len(c.x)-1]
}

func cdf(name string, h *hdrhistogram.Histogram) curve {
	c := curve{name: name, style: styleOf(name), n: h.TotalCount()}
	var cum int64
	for _, b := range h.Distribution() {
		if b.Count == 0 {
			continue
		}
		if cum == 0 {
			c.x, c.q = append(c.x, us(b.From)), append(c.q, 0)
		}
		cum += b.Count
		c.x, c.q = append(c.x, us(b.To)), append(c.q, float64(cum)/float64(c.n))
	}
	return c
}

// writePlot draws the 64 B rr CDFs of rep into a PNG file.
func writePlot(name string, rep *Report) error {
	img, err := Plot(rep)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return err
	}
	return os.WriteFile(name, buf.Bytes(), 0o644)
}

// Plot renders the 64 B rr CDFs of rep.
func Plot(rep *Report) (*image.RGBA, error) {
	spec := bench.Spec{Workload: bench.RR, Size: 64, Conns: 1}
	var curves []curve
	for _, sys := range rep.systems {
		if r := rep.find(sys, spec); r != nil && r.hist != nil && r.hist.TotalCount() > 0 {
			curves = append(curves, cdf(sys, r.hist))
		}
	}
	if len(curves) == 0 {
		return nil, errors.New("plot: no 64 B ping-pong results to draw")
	}
	// The left panel spans the curves up to their p99.9, so their bodies
	// are readable; the right one spans everything, tails included.
	lo, hi, body := math.Inf(1), math.Inf(-1), math.Inf(-1)
	var minTail float64 = 1
	for _, c := range curves {
		lo, hi = math.Min(lo, c.x[0]), math.Max(hi, c.x[len(c.x)-1])
		body = math.Max(body, c.at(0.999))
		minTail = math.Min(minTail, 1/float64(c.n))
	}
	x0, x1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if x1 <= x0 {
		x1 = x0 + 1
	}
	bx1 := math.Max(x0+1, math.Ceil(math.Log10(body)))
	tailDecades := math.Min(6, math.Max(2, math.Ceil(-math.Log10(minTail))))

	// The legend goes below the panels, wrapped to the width: the picture
	// grows by a line for each line of it past the third.
	const W = 1400
	type entry struct {
		x, y  float64
		label string
	}
	var legend []entry
	lx, ly := 110.0, 640.0
	for _, cv := range curves {
		label := fmt.Sprintf("%s (%d samples)", cv.name, cv.n)
		w := 66 + textWidth(label, 2)
		if lx+w > W-30 {
			lx, ly = 110, ly+32
		}
		legend = append(legend, entry{lx, ly, label})
		lx += w + 40
	}
	H := int(math.Max(720, ly+24))
	c := newCanvas(W, H)
	c.text(40, 34, 2, ink, fmt.Sprintf("Ping-pong round trip, 64 B messages: CDF, %d repeat(s) merged (%s)", rep.Env.Repeats, rep.Env.Date))

	left := panel{c: c, x: 110, y: 70, w: 510, h: 470, x0: x0, x1: bx1, clipped: bx1 < x1}
	right := panel{c: c, x: 840, y: 70, w: 510, h: 470, x0: x0, x1: x1}

	// Left: the CDF, linear in the fraction.
	left.frame()
	for i := 0; i <= 10; i++ {
		y := left.y + left.h - float64(i)/10*left.h
		col := minor
		if i%5 == 0 {
			col = gridCol
		}
		c.hline(left.x, left.x+left.w, y, col)
		if i%2 == 0 {
			lab := fmt.Sprintf("%.1f", float64(i)/10)
			c.text(left.x-10-c.width(lab, 2), y+7, 2, ink, lab)
		}
	}
	left.xaxis()
	c.textUp(40, left.y+left.h/2+c.width("fraction of transactions", 2)/2, 2, ink, "fraction of transactions")
	for _, cv := range curves {
		var pts [][2]float64
		for i := range cv.x {
			x := left.px(cv.x[i])
			if x > left.x+left.w {
				// Past the axis: finish the curve along the edge.
				pts = append(pts, [2]float64{left.x + left.w, left.y + left.h - cv.q[i]*left.h})
				pts = append(pts, [2]float64{left.x + left.w, left.y})
				break
			}
			pts = append(pts, [2]float64{x, left.y + left.h - cv.q[i]*left.h})
		}
		c.polyline(pts, cv.style)
	}
	left.frame()

	// Right: the tail, 1 - CDF on a log axis.
	right.frame()
	ty := func(t float64) float64 { // t = 1 - q, from 1 down to 10^-tailDecades
		return right.y + (-math.Log10(t))/tailDecades*right.h
	}
	for d := 0.0; d <= tailDecades; d++ {
		y := ty(math.Pow(10, -d))
		c.hline(right.x, right.x+right.w, y, gridCol)
		lab := "p0"
		if d > 0 {
			lab = "p" + trimZeros(100*(1-math.Pow(10, -d)))
		}
		c.text(right.x-10-c.width(lab, 2), y+7, 2, ink, lab)
	}
	right.xaxis()
	c.textUp(right.x-122, right.y+right.h/2+c.width("percentile (1 - CDF, log)", 2)/2, 2, ink, "percentile (1 - CDF, log)")
	for _, cv := range curves {
		var pts [][2]float64
		for i := range cv.x {
			t := 1 - cv.q[i]
			if t < math.Pow(10, -tailDecades) {
				// Below the axis (the last transactions): drop to the
				// bottom edge there.
				pts = append(pts, [2]float64{right.px(cv.x[i]), right.y + right.h})
				break
			}
			pts = append(pts, [2]float64{right.px(cv.x[i]), ty(t)})
		}
		c.polyline(pts, cv.style)
	}
	right.frame()

	for i, e := range legend {
		c.polyline([][2]float64{{e.x, e.y - 5}, {e.x + 58, e.y - 5}}, curves[i].style)
		c.text(e.x+66, e.y+2, 2, ink, e.label)
	}
	return c.img, nil
}

func trimZeros(v float64) string {
	s := fmt.Sprintf("%.6f", v)
	for s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

// panel is a plot area with a log10 latency x axis from 10^x0 to 10^x1 µs.
type panel struct {
	c          *canvas
	x, y, w, h float64
	x0, x1     float64
	clipped    bool // curves go on past x1
}

func (p *panel) px(us float64) float64 {
	return p.x + (math.Log10(us)-p.x0)/(p.x1-p.x0)*p.w
}

func (p *panel) frame() {
	p.c.rect(p.x, p.y, p.x+p.w, p.y+p.h, ink)
}

// xaxis draws the decade grid, the minor ticks and the labels.
func (p *panel) xaxis() {
	for d := p.x0; d <= p.x1; d++ {
		for m := 1; m < 10; m++ {
			v := math.Pow(10, d) * float64(m)
			if math.Log10(v) > p.x1+1e-9 {
				break
			}
			x := p.px(v)
			if m == 1 {
				p.c.vline(x, p.y, p.y+p.h, gridCol)
				lab := trimZeros(v)
				p.c.text(x-p.c.width(lab, 2)/2, p.y+p.h+26, 2, ink, lab)
			} else {
				p.c.vline(x, p.y, p.y+p.h, minor)
				p.c.vline(x, p.y+p.h-6, p.y+p.h, ink)
			}
		}
	}
	lab := "round-trip latency (µs, log)"
	if p.clipped {
		lab = "round-trip latency (µs, log; tails at right)"
	}
	p.c.text(p.x+p.w/2-p.c.width(lab, 2)/2, p.y+p.h+56, 2, ink, lab)
}

// canvas is a tiny raster renderer: lines, rectangles and bitmap text.
type canvas struct {
	img *image.RGBA
}

func newCanvas(w, h int) *canvas {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		copy(img.Pix[i:i+4], []byte{white.R, white.G, white.B, 255})
	}
	return &canvas{img: img}
}

func (c *canvas) set(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.img.Rect) {
		c.img.SetRGBA(x, y, col)
	}
}

func (c *canvas) hline(x0, x1, y float64, col color.RGBA) {
	for x := int(math.Round(x0)); x <= int(math.Round(x1)); x++ {
		c.set(x, int(math.Round(y)), col)
	}
}

func (c *canvas) vline(x, y0, y1 float64, col color.RGBA) {
	for y := int(math.Round(y0)); y <= int(math.Round(y1)); y++ {
		c.set(int(math.Round(x)), y, col)
	}
}

func (c *canvas) rect(x0, y0, x1, y1 float64, col color.RGBA) {
	c.hline(x0, x1, y0, col)
	c.hline(x0, x1, y1, col)
	c.vline(x0, y0, y1, col)
	c.vline(x1, y0, y1, col)
}

// thickLine draws a line two and a half pixels wide; on, if not nil,
// says at which distances along it (from 0 to its length) to draw.
func (c *canvas) thickLine(x0, y0, x1, y1 float64, col color.RGBA, on func(d float64) bool) {
	length := math.Hypot(x1-x0, y1-y0)
	n := int(math.Max(math.Abs(x1-x0), math.Abs(y1-y0))*2) + 1
	for i := 0; i <= n; i++ {
		t := float64(i) / float64(n)
		if on != nil && !on(t*length) {
			continue
		}
		x, y := x0+(x1-x0)*t, y0+(y1-y0)*t
		for dx := -1; dx <= 1; dx++ {
			for dy := -1; dy <= 1; dy++ {
				if dx != 0 && dy != 0 {
					continue
				}
				c.set(int(math.Round(x))+dx, int(math.Round(y))+dy, col)
			}
		}
	}
}

// polyline draws the line through pts in st; the dash pattern runs on
// from one segment to the next.
func (c *canvas) polyline(pts [][2]float64, st style) {
	period := 0.0
	for _, d := range st.dash {
		period += d
	}
	along := 0.0
	for i := 1; i < len(pts); i++ {
		var on func(float64) bool
		if period > 0 {
			start := along
			on = func(d float64) bool {
				p := math.Mod(start+d, period)
				for k, seg := range st.dash {
					if p < seg {
						return k%2 == 0
					}
					p -= seg
				}
				return false
			}
		}
		c.thickLine(pts[i-1][0], pts[i-1][1], pts[i][0], pts[i][1], st.color, on)
		along += math.Hypot(pts[i][0]-pts[i-1][0], pts[i][1]-pts[i-1][1])
	}
}

// width is how wide s is at the given scale.
func (c *canvas) width(s string, scale int) float64 { return textWidth(s, scale) }

func textWidth(s string, scale int) float64 {
	return float64(len([]rune(s)) * advance * scale)
}

// text draws s with its baseline at y.
func (c *canvas) text(x, y float64, scale int, col color.RGBA, s string) {
	c.glyphs(s, scale, func(gx, gy int) (int, int) {
		return int(x) + gx, int(y) - glyphRise*scale + gy
	}, col)
}

// textUp draws s rotated a quarter turn, reading upwards from (x, y).
func (c *canvas) textUp(x, y float64, scale int, col color.RGBA, s string) {
	c.glyphs(s, scale, func(gx, gy int) (int, int) {
		return int(x) + gy, int(y) - gx
	}, col)
}

func (c *canvas) glyphs(s string, scale int, at func(gx, gy int) (int, int), col color.RGBA) {
	pen := 0
	for _, r := range s {
		g, ok := glyphs[r]
		if !ok {
			g = glyphs['?']
		}
		for row, line := range g {
			for k := 0; k < len(line) && k < glyphW; k++ {
				if line[k] != '#' {
					continue
				}
				for sy := range scale {
					for sx := range scale {
						px, py := at(pen+k*scale+sx, row*scale+sy)
						c.set(px, py, col)
					}
				}
			}
		}
		pen += advance * scale
	}
}
