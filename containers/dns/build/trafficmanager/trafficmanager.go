// Package trafficmanager is a CoreDNS plugin that answers for a Traffic Manager profile.
//
// It serves what drill's health prober decides: the prober writes a JSON state file (the
// profile's names, TTL, routing method and the endpoints eligible for DNS answers, or that
// the profile answers NXDOMAIN), and this plugin applies the routing method per query:
//
//	priority    the eligible endpoint with the lowest priority value
//	weighted    one eligible endpoint at random, in proportion to its weight (seeded, so a
//	            drill can be replayed: the same seed gives the same sequence of answers)
//	multivalue  up to max_answers eligible endpoints
//
// The vanity name is answered with a CNAME to the profile name followed by the profile's
// records, as a recursive resolver would return it. The state file is re-read whenever its
// modification time or size changes (checked at most every 50 ms), so an answer changes
// within 50 ms of the prober's decision.
//
// Corefile syntax:  trafficmanager STATEFILE
package trafficmanager

import (
	"context"
	"encoding/json"
	"math/rand"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"
)

const name = "trafficmanager"

// recheck is how often, at most, the state file's metadata is looked at.
const recheck = 50 * time.Millisecond

func init() { plugin.Register(name, setup) }

func setup(c *caddy.Controller) error {
	c.Next()
	args := c.RemainingArgs()
	if len(args) != 1 {
		return plugin.Error(name, c.ArgErr())
	}
	tm := &TrafficManager{path: args[0]}
	dnsserver.GetConfig(c).AddPlugin(func(next plugin.Handler) plugin.Handler {
		tm.Next = next
		return tm
	})
	return nil
}

// Endpoint is one endpoint eligible for answers.
type Endpoint struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
}

// State is what the prober decided.
type State struct {
	Profile    string     `json:"profile"`
	Vanity     string     `json:"vanity"`
	TTL        uint32     `json:"ttl"`
	NXDomain   bool       `json:"nxdomain"`
	Routing    string     `json:"routing"`
	MaxAnswers int        `json:"max_answers"`
	Seed       int64      `json:"seed"`
	Endpoints  []Endpoint `json:"endpoints"`
}

// TrafficManager is the plugin handler.
type TrafficManager struct {
	Next plugin.Handler
	path string

	mu      sync.Mutex
	state   *State
	mtime   time.Time
	size    int64
	checked time.Time
	rng     *rand.Rand
	seed    int64
}

// Name implements plugin.Handler.
func (tm *TrafficManager) Name() string { return name }

func (tm *TrafficManager) load() *State {
	now := time.Now()
	if tm.state != nil && now.Sub(tm.checked) < recheck {
		return tm.state
	}
	tm.checked = now
	fi, err := os.Stat(tm.path)
	if err != nil {
		return tm.state
	}
	if tm.state != nil && fi.ModTime().Equal(tm.mtime) && fi.Size() == tm.size {
		return tm.state
	}
	raw, err := os.ReadFile(tm.path)
	if err != nil {
		return tm.state
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return tm.state // a torn write cannot happen (rename), but keep the last good state
	}
	st.Profile = dns.Fqdn(strings.ToLower(st.Profile))
	if st.Vanity != "" {
		st.Vanity = dns.Fqdn(strings.ToLower(st.Vanity))
	}
	sort.SliceStable(st.Endpoints, func(i, j int) bool { return st.Endpoints[i].Name < st.Endpoints[j].Name })
	if tm.rng == nil || st.Seed != tm.seed {
		tm.rng = rand.New(rand.NewSource(st.Seed))
		tm.seed = st.Seed
	}
	tm.state, tm.mtime, tm.size = &st, fi.ModTime(), fi.Size()
	return tm.state
}

// pick applies the routing method to the eligible endpoints.
func (tm *TrafficManager) pick(st *State) []Endpoint {
	eps := st.Endpoints
	if len(eps) == 0 {
		return nil
	}
	switch st.Routing {
	case "weighted":
		total := 0
		for _, e := range eps {
			total += e.Weight
		}
		if total <= 0 {
			return eps[:1]
		}
		n := tm.rng.Intn(total)
		for _, e := range eps {
			if n < e.Weight {
				return []Endpoint{e}
			}
			n -= e.Weight
		}
		return eps[len(eps)-1:]
	case "multivalue":
		max := st.MaxAnswers
		if max <= 0 || max > len(eps) {
			max = len(eps)
		}
		return eps[:max]
	default: // priority
		best := eps[0]
		for _, e := range eps[1:] {
			if e.Priority < best.Priority {
				best = e
			}
		}
		return []Endpoint{best}
	}
}

func soa(st *State) dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: st.Profile, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: st.TTL},
		Ns:      "ns1." + st.Profile,
		Mbox:    "hostmaster." + st.Profile,
		Serial:  1,
		Refresh: 3600,
		Retry:   600,
		Expire:  86400,
		Minttl:  st.TTL,
	}
}

// ServeDNS implements plugin.Handler.
func (tm *TrafficManager) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 {
		return plugin.NextOrFailure(tm.Name(), tm.Next, ctx, w, r)
	}
	q := r.Question[0]
	qname := strings.ToLower(q.Name)

	tm.mu.Lock()
	st := tm.load()
	if st == nil || (qname != st.Profile && qname != st.Vanity) {
		tm.mu.Unlock()
		return plugin.NextOrFailure(tm.Name(), tm.Next, ctx, w, r)
	}
	var chosen []Endpoint
	if !st.NXDomain && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY) {
		chosen = tm.pick(st)
	}
	tm.mu.Unlock()

	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if qname == st.Vanity {
		m.Answer = append(m.Answer, &dns.CNAME{
			Hdr:    dns.RR_Header{Name: q.Name, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: st.TTL},
			Target: st.Profile,
		})
		if q.Qtype == dns.TypeCNAME {
			w.WriteMsg(m)
			return dns.RcodeSuccess, nil
		}
	}
	if st.NXDomain {
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa(st)}
		w.WriteMsg(m)
		return dns.RcodeNameError, nil
	}
	for _, e := range chosen {
		ip := net.ParseIP(e.Address).To4()
		if ip == nil {
			continue
		}
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: st.Profile, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: st.TTL},
			A:   ip,
		})
	}
	if len(chosen) == 0 {
		m.Ns = []dns.RR{soa(st)} // NODATA
	}
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}
