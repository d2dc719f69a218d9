package ledger

import (
	"cmp"
	"fmt"
	"slices"
	"time"
	_ "time/tzdata" // store time zones resolve on a machine without a zoneinfo database

	"storemesh/crdt"
)

// Stores as records (issue 17): a store.set op, written in the store's own
// scope by a manager of that store or an anchor, gives a store its name,
// currency and time zone (an LWW register per store). A store that a
// device's certificate names exists from its enrolment, shown by its id,
// in UTC, until someone declares it; a store neither names is unknown, and
// writes for it are refused (the anchor's typo).

// KindStoreSet declares or changes a store record.
const KindStoreSet Kind = "store.set"

// StoreRecord is the body of store.set.
type StoreRecord struct {
	Name     string `cbor:"1,keyasint" json:"name"`
	Currency string `cbor:"2,keyasint" json:"currency"`
	TimeZone string `cbor:"3,keyasint" json:"time_zone"` // an IANA zone: Europe/Paris
}

func (b *StoreRecord) validate() error {
	if b.Name == "" || len(b.Name) > 100 {
		return fmt.Errorf("store name must be 1..100 bytes")
	}
	if !currencyPattern.MatchString(b.Currency) {
		return fmt.Errorf("currency %q is not an ISO 4217 code", b.Currency)
	}
	if _, err := LoadZone(b.TimeZone); err != nil {
		return err
	}
	return nil
}

// LoadZone resolves an IANA time zone name; "" and "Local" are refused
// (a store's days must not depend on the machine reading them).
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || len(name) > 64 {
		return nil, fmt.Errorf("time zone %q: want an IANA zone such as Europe/Paris, or UTC", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %v", name, err)
	}
	return loc, nil
}

// StoreInfo is a store as this replica knows it.
type StoreInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Currency string `json:"currency,omitempty"`
	TimeZone string `json:"time_zone"`
	// Declared is false for a store only a certificate names: its name
	// is its id and its days are UTC until a store.set arrives.
	Declared bool   `json:"declared"`
	Devices  int    `json:"devices"` // certified devices of the store
	By       string `json:"by,omitempty"`
	At       int64  `json:"at_ms,omitempty"` // when the record in force was written
}

func (s *state) setStore(o *Op, b *StoreRecord) {
	if s.stores == nil {
		s.stores = map[string]*crdt.LWW[StoreRecord]{}
	}
	lwwSet(s.stores, o.Store, *b, o)
	if s.zones == nil {
		s.zones = map[string]*time.Location{}
	}
	if loc, err := LoadZone(s.stores[o.Store].Value.TimeZone); err == nil {
		s.zones[o.Store] = loc
	}
}

// Stores lists every store a record or a certificate names, by id.
func (l *Ledger) Stores() []StoreInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	byID := map[string]*StoreInfo{}
	for _, cs := range l.certs {
		if len(cs) == 0 || cs[0].Store == FleetScope {
			continue
		}
		st := cs[0].Store
		if byID[st] == nil {
			byID[st] = &StoreInfo{ID: st, Name: st, TimeZone: "UTC"}
		}
		byID[st].Devices++
	}
	for id, r := range l.st.stores {
		si := byID[id]
		if si == nil {
			si = &StoreInfo{ID: id}
			byID[id] = si
		}
		si.Name, si.Currency, si.TimeZone, si.Declared = r.Value.Name, r.Value.Currency, r.Value.TimeZone, true
		si.By, si.At = ChainOwner(r.Device), r.TS.Wall/1e6
	}
	out := make([]StoreInfo, 0, len(byID))
	for _, si := range byID {
		out = append(out, *si)
	}
	slices.SortFunc(out, func(a, b StoreInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// KnownStore reports whether a record or a certificate names store id.
func (l *Ledger) KnownStore(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.st.stores[id]; ok {
		return true
	}
	for _, cs := range l.certs {
		for _, c := range cs {
			if c.Store == id {
				return true
			}
		}
	}
	return false
}
