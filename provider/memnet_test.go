package provider

import "github.com/sdx-project/sdx/provider/memnet"

var _ Link = (*memnet.Link)(nil)
