package mqtt

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"storemesh/crdt"
	"storemesh/ledger"
	"storemesh/sink"
)

// Config says where the sink publishes.
type Config struct {
	// URL is the broker: tcp://HOST:1883 (also ssl://, ws://, wss://).
	URL string
	// Prefix is put before every topic ("acme" → acme/store/S/...); empty
	// for none.
	Prefix string
	// ClientID identifies the anchor to the broker: storemesh-DEVICE.
	ClientID string
	// Dir is where the outbox cursor lives (the anchor's data folder).
	Dir string
	// Ledger answers receipt numbers, conflicts, forks, revocations and
	// certificates.
	Ledger *ledger.Ledger
	// LastContact returns when the anchor last heard from each device it
	// is connected to (for fleet/{device}/health.status); nil: unknown.
	LastContact func() map[string]time.Time
	// Timeout bounds connecting and each batch's acknowledgements: 10 s.
	Timeout time.Duration
	// Now is the wall clock: time.Now.
	Now func() time.Time
	// Logger: default discard.
	Logger *slog.Logger
}

// Validate checks c, the URL's syntax included.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.URL)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("mqtt: --mqtt URL: %w", err))
	case !slices.Contains([]string{"tcp", "mqtt", "ssl", "tls", "ws", "wss"}, u.Scheme) || u.Host == "":
		errs = append(errs, fmt.Errorf("mqtt: --mqtt URL %q: want tcp://HOST:PORT", c.URL))
	}
	if strings.ContainsAny(c.Prefix, "+#") || strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/") {
		errs = append(errs, fmt.Errorf("mqtt: prefix %q: no wildcards (+ #) and no leading or trailing /", c.Prefix))
	}
	if c.ClientID == "" || c.Dir == "" || c.Ledger == nil {
		errs = append(errs, errors.New("mqtt: ClientID, Dir and Ledger are required"))
	}
	return errors.Join(errs...)
}

// Target is the MQTT sink (a sink.Target).
type Target struct {
	cfg    Config
	log    *slog.Logger
	client paho.Client
	path   string // the outbox cursor file
	out    outbox
	health map[string]string // device → fingerprint of the retained status last published
}

var _ sink.Target = (*Target)(nil)

// outbox is the durable cursor file.
type outbox struct {
	V         int                           `json:"v"`
	URL       string                        `json:"url"`
	Prefix    string                        `json:"prefix"`
	Cursor    map[string]crdt.VersionVector `json:"cursor"`
	Conflicts map[string]bool               `json:"conflicts"` // open conflicts already announced
}

const outboxVersion = 1

// New checks cfg; it does not connect (Write does, and again after every
// failure).
func New(cfg Config) (*Target, error) {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// One outbox per (broker, prefix): pointing the anchor at another
	// broker publishes the history there too.
	sum := sha256.Sum256([]byte(cfg.URL + "\x00" + cfg.Prefix))
	return &Target{cfg: cfg, log: cfg.Logger, health: map[string]string{},
		path: filepath.Join(cfg.Dir, "mqtt-outbox-"+hex.EncodeToString(sum[:6])+".json")}, nil
}

// Name implements sink.Target.
func (t *Target) Name() string { return "mqtt" }

// OutboxPath is the cursor file.
func (t *Target) OutboxPath() string { return t.path }

// Cursor implements sink.Target: the outbox file (none yet: from the start).
func (t *Target) Cursor(ctx context.Context) (sink.Cursor, error) {
	t.out = outbox{V: outboxVersion, URL: t.cfg.URL, Prefix: t.cfg.Prefix, Cursor: map[string]crdt.VersionVector{}, Conflicts: map[string]bool{}}
	b, err := os.ReadFile(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return sink.Cursor{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mqtt: outbox: %w", err)
	}
	var o outbox
	if err := json.Unmarshal(b, &o); err != nil || o.V != outboxVersion {
		// Refuse rather than republish everything silently.
		return nil, fmt.Errorf("mqtt: outbox %s is damaged or of another version (v %d, %v): remove it to publish every op again", t.path, o.V, err)
	}
	if o.Cursor == nil {
		o.Cursor = map[string]crdt.VersionVector{}
	}
	if o.Conflicts == nil {
		o.Conflicts = map[string]bool{}
	}
	t.out = o
	cur := sink.Cursor{}
	for s, v := range o.Cursor {
		cur[s] = v.Clone()
	}
	return cur, nil
}

func (t *Target) save() error {
	b, err := json.Marshal(t.out)
	if err != nil {
		return err
	}
	tmp := t.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("mqtt: outbox: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, t.path)
	}
	if err == nil {
		if d, derr := os.Open(filepath.Dir(t.path)); derr == nil {
			d.Sync()
			d.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("mqtt: outbox: %w", err)
	}
	return nil
}

func (t *Target) connect() error {
	if t.client != nil && t.client.IsConnectionOpen() {
		return nil
	}
	t.drop()
	o := paho.NewClientOptions().AddBroker(t.cfg.URL).SetClientID(t.cfg.ClientID).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(t.cfg.Timeout).SetWriteTimeout(t.cfg.Timeout).SetKeepAlive(30 * time.Second).
		SetOrderMatters(false)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(t.cfg.Timeout) {
		c.Disconnect(0)
		return fmt.Errorf("mqtt: connect %s: timed out after %v", t.cfg.URL, t.cfg.Timeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt: connect %s: %w", t.cfg.URL, err)
	}
	t.client = c
	clear(t.health) // a new connection: publish every retained status again
	t.log.Info("mqtt sink connected", "broker", t.cfg.URL)
	return nil
}

func (t *Target) drop() {
	if t.client != nil {
		t.client.Disconnect(100)
		t.client = nil
	}
}

// message is one publish.
type message struct {
	topic    string
	payload  []byte
	retained bool
}

// publish sends msgs at QoS 1 and waits for every acknowledgement.
func (t *Target) publish(ctx context.Context, msgs []message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := t.connect(); err != nil {
		return err
	}
	toks := make([]paho.Token, len(msgs))
	for i, m := range msgs {
		toks[i] = t.client.Publish(m.topic, 1, m.retained, m.payload)
	}
	deadline := time.NewTimer(t.cfg.Timeout)
	defer deadline.Stop()
	for i, tok := range toks {
		select {
		case <-tok.Done():
		case <-deadline.C:
			t.drop()
			return fmt.Errorf("mqtt: %d messages not acknowledged within %v", len(toks)-i, t.cfg.Timeout)
		case <-ctx.Done():
			t.drop()
			return ctx.Err()
		}
		if err := tok.Error(); err != nil {
			t.drop()
			return fmt.Errorf("mqtt: publish %s: %w", msgs[i].topic, err)
		}
	}
	return nil
}

// Write implements sink.Target: publish the batch, wait for the broker's
// acknowledgements, then move the outbox cursor (so a crash in between
// publishes the batch again: at least once).
func (t *Target) Write(ctx context.Context, scope string, ops []sink.Op, cursor crdt.VersionVector) error {
	msgs := make([]message, 0, len(ops))
	for _, o := range ops {
		if m, ok := t.opMessage(o); ok {
			msgs = append(msgs, m)
		}
	}
	if err := t.publish(ctx, msgs); err != nil {
		return err
	}
	t.out.Cursor[scope] = cursor.Clone()
	return t.save()
}

// Idle implements sink.Target: announce newly open conflicts and publish
// the retained health of each device whose status changed.
func (t *Target) Idle(ctx context.Context) error {
	l := t.cfg.Ledger
	var msgs []message
	open := map[string]bool{}
	for _, c := range l.Conflicts("") {
		if c.Resolution != nil {
			continue
		}
		open[c.ID] = true
		if !t.out.Conflicts[c.ID] {
			msgs = append(msgs, t.conflictMessage(c))
		}
	}
	changed := len(msgs) > 0 || len(open) != len(t.out.Conflicts)
	if err := t.publish(ctx, msgs); err != nil {
		return err
	}
	if changed {
		t.out.Conflicts = open
		if err := t.save(); err != nil {
			return err
		}
	}
	hm, fps := t.healthMessages()
	if err := t.publish(ctx, hm); err != nil {
		return err
	}
	for d, fp := range fps {
		t.health[d] = fp
	}
	return nil
}

// Close implements sink.Target.
func (t *Target) Close() error {
	t.drop()
	return nil
}
