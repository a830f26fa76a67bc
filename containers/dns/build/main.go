// Command coredns is a lean CoreDNS build for drill's dns role.
//
// It links only the plugins drill's Corefiles use, instead of CoreDNS's default
// set (which pulls in many cloud SDKs), following CoreDNS's documented way of
// enabling plugins at compile time: import coremain and the chosen plugins, and
// set dnsserver.Directives to them in the canonical order of CoreDNS's plugin.cfg.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/auto"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"

	_ "drill.invalid/coredns/trafficmanager"
)

// directives lists the linked plugins in the order of CoreDNS v1.15.0's plugin.cfg.
// Ordering matters: a plugin sees the effects of every plugin listed after it.
var directives = []string{
	"reload",
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"trafficmanager", // drill's own: Traffic Manager answers decided by the health prober
	"template",
	"hosts",
	"file",
	"auto",
	"whoami",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
