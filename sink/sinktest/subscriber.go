package sinktest

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Message is one received MQTT message.
type Message struct {
	Topic    string
	Payload  map[string]any
	Retained bool
}

// Subscriber records what a broker delivers on a topic filter.
type Subscriber struct {
	mu   sync.Mutex
	msgs []Message
	byOp map[string]int // op_id → deliveries
}

// Subscribe subscribes to filter at QoS 1 with a persistent session (a
// fixed client id, clean session off) that reconnects by itself, so
// messages queued while it was cut off by a broker restart still arrive.
func Subscribe(t testing.TB, url, filter string) *Subscriber {
	t.Helper()
	s := &Subscriber{byOp: map[string]int{}}
	handler := func(_ paho.Client, m paho.Message) {
		var p map[string]any
		json.Unmarshal(m.Payload(), &p)
		s.mu.Lock()
		s.msgs = append(s.msgs, Message{Topic: m.Topic(), Payload: p, Retained: m.Retained()})
		if id, ok := p["op_id"].(string); ok && id != "" {
			s.byOp[id]++
		}
		s.mu.Unlock()
	}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(Unique("sub")).SetCleanSession(false).
		SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond).SetConnectRetry(true).
		SetConnectRetryInterval(200 * time.Millisecond).SetOrderMatters(false).SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(c paho.Client) { c.Subscribe(filter, 1, handler) })
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect %s: %v", url, tok.Error())
	}
	st := c.Subscribe(filter, 1, handler)
	if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, st.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return s
}

// Deliveries is how often the op was delivered.
func (s *Subscriber) Deliveries(opID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byOp[opID]
}

// Messages returns a copy of everything received.
func (s *Subscriber) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}
