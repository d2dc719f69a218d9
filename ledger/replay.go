package ledger

import (
	"context"
	"fmt"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
)

// replay rebuilds certificates, chains, version vectors and state from
// storage. Stored ops were verified when they arrived, so signatures are
// not checked again here (audit verify does that); chain links are, and a
// stored op that does not decode or link is a CorruptError.
func (l *Ledger) replay(ctx context.Context) error {
	if err := l.scan(ctx, "/c", func(key string, val []byte) error {
		c, err := DecodeCertificate(val)
		if err != nil {
			return &CorruptError{Key: key, Err: err}
		}
		l.certs[c.Device] = append(l.certs[c.Device], c)
		return nil
	}); err != nil {
		return err
	}
	self := l.selfDevice()
	return l.scan(ctx, "/o", func(key string, val []byte) error {
		o, err := DecodeOp(val)
		if err != nil {
			return &CorruptError{Key: key, Err: err}
		}
		if ds.NewKey(key) != opKey(o) {
			return &CorruptError{Key: key, Err: fmt.Errorf("op %s stored under the wrong key", o)}
		}
		b, err := decodeStored(o)
		if err != nil {
			return &CorruptError{Key: key, Err: err}
		}
		c := l.chainOf(o.Store, o.Device)
		pl := c.classify(o)
		if pl != placeNext && pl != placeFork {
			return &CorruptError{Key: key, Err: fmt.Errorf("op %s does not link to its chain", o)}
		}
		l.placeIn(c, o, pl)
		if ChainOwner(o.Device) == self {
			l.clock.Restore(o.HLC)
		}
		if pl == placeFork {
			l.stats.Forks++
		}
		l.materialise(pendingOp{o, b})
		return nil
	})
}

func (l *Ledger) scan(ctx context.Context, prefix string, fn func(key string, val []byte) error) error {
	res, err := l.ds.Query(ctx, dsq.Query{Prefix: prefix, Orders: []dsq.Order{dsq.OrderByKey{}}})
	if err != nil {
		return fmt.Errorf("%w: query %s: %v", ErrStorage, prefix, err)
	}
	defer res.Close()
	for {
		r, ok := res.NextSync()
		if !ok {
			return nil
		}
		if r.Error != nil {
			return fmt.Errorf("%w: read %s: %v", ErrStorage, prefix, r.Error)
		}
		if err := fn(r.Key, r.Value); err != nil {
			return err
		}
	}
}
