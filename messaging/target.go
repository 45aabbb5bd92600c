package messaging

import (
	"fmt"
	"strconv"
	"strings"
)

// Target says where messages go and what a server or endpoint accepts, as
// oslo's Target does. Which fields matter depends on the use:
//
//   - an RPC client needs Topic; Server addresses one server, Fanout every
//     server of the topic (casts only), Namespace and Version are sent with
//     each request;
//   - an RPC server needs Topic and Server;
//   - an endpoint uses Namespace, Version and LegacyNamespaces;
//   - a notification listener uses Topic and Exchange.
//
// An empty Exchange means the transport's control exchange ("openstack").
type Target struct {
	Exchange  string
	Topic     string
	Server    string
	Namespace string // "" is oslo's None
	Version   string // "X.Y" or "X.Y.Z"; "" means unset ("1.0" on endpoints)
	Fanout    bool
	// LegacyNamespaces are extra namespaces an endpoint also accepts; ""
	// stands for requests without a namespace.
	LegacyNamespaces []string
}

// String shows the target the way oslo logs it.
func (t Target) String() string {
	var b strings.Builder
	b.WriteString("<Target")
	add := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, " %s=%s", k, v)
		}
	}
	add("exchange", t.Exchange)
	add("topic", t.Topic)
	add("namespace", t.Namespace)
	add("version", t.Version)
	add("server", t.Server)
	if t.Fanout {
		b.WriteString(" fanout=True")
	}
	b.WriteString(">")
	return b.String()
}

type version struct{ major, minor, rev int }

func parseVersion(s string) (version, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return version{}, fmt.Errorf("messaging: invalid version %q (want X.Y or X.Y.Z)", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return version{}, fmt.Errorf("messaging: invalid version %q (want X.Y or X.Y.Z)", s)
		}
		n[i] = v
	}
	return version{n[0], n[1], n[2]}, nil
}

// VersionIsCompatible implements oslo's version_is_compatible: an
// implementation at impl serves a request for req when the majors are
// equal, the requested minor is not above the implemented one and, for
// equal minors, the revision is not above either. An empty impl accepts
// everything; an empty or malformed req accepts nothing.
func VersionIsCompatible(impl, req string) bool {
	if impl == "" {
		return true
	}
	if req == "" {
		return false
	}
	i, err := parseVersion(impl)
	if err != nil {
		return false
	}
	r, err := parseVersion(req)
	if err != nil {
		return false
	}
	if i.major != r.major || r.minor > i.minor {
		return false
	}
	return r.minor != i.minor || r.rev <= i.rev
}
