package mesh

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

func TestSessionConfigValidate(t *testing.T) {
	ok := SessionConfig{RemoteID: "p", RemotePub: make(ed25519.PublicKey, ed25519.PublicKeySize), Now: func() int64 { return 0 }}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*SessionConfig)
		want string
	}{
		{"no peer", func(c *SessionConfig) { c.RemoteID = "" }, "RemoteID"},
		{"short key", func(c *SessionConfig) { c.RemotePub = c.RemotePub[:5] }, "RemotePub is 5 bytes"},
		{"no clock", func(c *SessionConfig) { c.Now = nil }, "clock (Now)"},
		{"negative", func(c *SessionConfig) { c.SummaryTicks = -1 }, "SummaryTicks is -1"},
		{"batch past a frame", func(c *SessionConfig) { c.BatchBytes = MaxFrame }, "BatchBytes"},
		{"window below a batch", func(c *SessionConfig) { c.BatchBytes, c.WindowBytes = 64<<10, 1<<10 }, "WindowBytes"},
		{"keepalive below summary", func(c *SessionConfig) { c.SummaryTicks, c.KeepaliveTicks = 10, 3 }, "KeepaliveTicks 3"},
		{"huge pull", func(c *SessionConfig) { c.MaxPull = 1 << 40 }, "MaxPull"},
	} {
		cfg := ok
		c.edit(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming %q", c.name, err, c.want)
		}
	}
}
