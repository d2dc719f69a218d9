package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"storemesh/ledger"
)

// chromiumPath is Debian's chromium (CI's .ci/run installs it).
const chromiumPath = "/usr/bin/chromium"

// startBrowser starts a headless Chromium with a fresh profile and returns
// the browser's context; each chromedp.NewContext(ctx) on it is a new tab.
// The page tests only ever navigate to 127.0.0.1 nodes the test started.
func startBrowser(t *testing.T, timeout time.Duration) context.Context {
	t.Helper()
	exe := chromiumPath
	if _, err := os.Stat(exe); err != nil {
		p, lerr := exec.LookPath("chromium")
		if lerr != nil {
			t.Skipf("CHROMIUM UNAVAILABLE: %s: %v (apt-get install -y chromium)", chromiumPath, err)
		}
		exe = p
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true),
		chromedp.WindowSize(1280, 1000),
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		// A graceful close lets Chromium finish writing its profile before
		// t.TempDir removes it.
		if err := chromedp.Cancel(browserCtx); err != nil {
			t.Logf("closing chromium: %v", err)
		}
		cancelBrowser()
		cancelAlloc()
		cancel()
	})
	// The first Run starts the browser; it must not get a shorter-lived
	// context than the browser itself.
	if err := chromedp.Run(browserCtx); err != nil {
		t.Skipf("CHROMIUM UNAVAILABLE: %s does not start: %v", exe, err)
	}
	return browserCtx
}

// tab is one browser tab showing one node's page.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context

	mu         sync.Mutex
	exceptions []string
}

func openTab(t *testing.T, browser context.Context, name, url string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	tb := &tab{t: t, name: name, ctx: ctx}
	chromedp.ListenTarget(ctx, func(ev any) {
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg := ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
			tb.mu.Lock()
			tb.exceptions = append(tb.exceptions, msg)
			tb.mu.Unlock()
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeWarning {
				var parts []string
				for _, a := range ev.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				t.Logf("%s console.%s: %s", name, ev.Type, strings.Join(parts, " "))
			}
		}
	})
	if err := chromedp.Run(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("%s: open %s: %v", name, url, err)
	}
	return tb
}

// run runs actions with a deadline.
func (tb *tab) run(d time.Duration, what string, actions ...chromedp.Action) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, d)
	defer cancel()
	if err := chromedp.Run(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %s: %v\npage:\n%s", tb.name, what, err, tb.text())
	}
}

// waitJS waits until the JavaScript expression is truthy, re-evaluating it
// every 50 ms (not on animation frames, which a background tab may not get).
func (tb *tab) waitJS(d time.Duration, what, expr string) {
	tb.t.Helper()
	var ok bool
	tb.run(d, "waiting for "+what, chromedp.Poll(expr, &ok,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d)))
}

// text is the page's visible text, for failure messages.
func (tb *tab) text() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 3*time.Second)
	defer cancel()
	var s string
	if err := chromedp.Run(ctx, chromedp.Evaluate(`document.body ? document.body.innerText : ""`, &s)); err != nil {
		return "(no text: " + err.Error() + ")"
	}
	return s
}

func (tb *tab) checkNoExceptions() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	for _, e := range tb.exceptions {
		tb.t.Errorf("%s: uncaught exception in the page: %s", tb.name, e)
	}
	tb.exceptions = nil
}

// byTestID is a CSS selector for a data-testid (ids may contain ':').
func byTestID(id string) string { return fmt.Sprintf(`[data-testid=%q]`, id) }

// jsTestID is a JavaScript expression selecting a data-testid.
func jsTestID(id string) string { return fmt.Sprintf(`document.querySelector('[data-testid=%q]')`, id) }

// TestBrowserTerminalPage drives the terminal page in a real headless
// Chromium: a sale rung up by clicks on terminal A's page is confirmed
// there, terminal B's open page shows the stock change live, and when A
// stops, B's sync panel shows A as no longer connected.
func TestBrowserTerminalPage(t *testing.T) {
	browser := startBrowser(t, 90*time.Second)

	f := newTestFleet(t, 40)
	mgr := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "manager"))
	a := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-a"), func(c *Config) { c.Peers = []string{tcpAddr(t, mgr)} })
	b := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-b"), func(c *Config) {
		c.Peers = []string{tcpAddr(t, mgr), tcpAddr(t, a)}
	})
	for _, u := range []string{a.URL(), b.URL()} {
		if !strings.HasPrefix(u, "http://127.0.0.1:") {
			t.Fatalf("node page at %s, not on 127.0.0.1", u)
		}
	}

	setItem(t, mgr, "TEA", "Tea", 350)
	setItem(t, mgr, "CAKE", "Cake", 500)
	must(t, mgr, 201, "POST", "/v1/stock/received", map[string]any{"sku": "TEA", "qty": 10})
	for _, n := range []*Node{a, b} {
		waitFor(t, 15*time.Second, "the catalog and stock on "+n.self.Name, func() bool {
			return len(n.l.Catalog()) == 2 && onHandOf(t, n, "TEA") == 10
		})
	}

	// B's page is open before the sale, so what follows is a live update.
	pageB := openTab(t, browser, "B", b.URL())
	pageB.run(10*time.Second, "B's stock row", chromedp.WaitVisible(byTestID("stock-row-TEA")))
	pageB.waitJS(10*time.Second, "B's stock 10 and A synced in B's peer list",
		jsTestID("stock-onhand-TEA")+`.textContent === "10" && `+
			jsTestID("peer-"+a.ID())+`?.dataset.established === "true" && `+
			jsTestID("live-badge")+`.textContent === "live"`)

	// Ring up 2 teas on A: tap the item twice, card, charge.
	pageA := openTab(t, browser, "A", a.URL())
	pageA.run(10*time.Second, "A's catalog", chromedp.WaitVisible(byTestID("sku-TEA")))
	pageA.waitJS(10*time.Second, "A's page live with stock 10",
		jsTestID("live-badge")+`.textContent === "live" && `+jsTestID("sku-stock-TEA")+`.textContent === "on hand 10"`)
	var total string
	pageA.run(10*time.Second, "ringing up",
		chromedp.Click(byTestID("sku-TEA"), chromedp.ByQuery),
		chromedp.Click(byTestID("sku-TEA"), chromedp.ByQuery),
		chromedp.WaitVisible(byTestID("cart-row-TEA"), chromedp.ByQuery),
		chromedp.SetValue(byTestID("payment"), "card", chromedp.ByQuery),
		chromedp.WaitEnabled(byTestID("charge"), chromedp.ByQuery),
		chromedp.Text(byTestID("total"), &total, chromedp.ByQuery),
	)
	if total != "7.00 EUR" {
		t.Errorf("cart total %q, want 7.00 EUR", total)
	}
	pageA.run(10*time.Second, "charging", chromedp.Click(byTestID("charge"), chromedp.ByQuery))
	pageA.waitJS(10*time.Second, "the sale confirmed on A",
		`(() => { const m = `+jsTestID("message")+`;
		  return m.classList.contains("ok") && m.textContent.startsWith("Sold: receipt ") &&
		    document.querySelector('[data-testid^="sale-row-"]') !== null &&
		    `+jsTestID("stock-onhand-TEA")+`?.textContent === "8"; })()`)
	var msg string
	pageA.run(5*time.Second, "reading the message", chromedp.Text(byTestID("message"), &msg, chromedp.ByQuery))
	sales := salesOf(t, a)
	if len(sales) != 1 || !strings.Contains(msg, sales[0].Receipt) || sales[0].Payment != "card" ||
		len(sales[0].Lines) != 1 || sales[0].Lines[0].Qty != 2 {
		t.Fatalf("A's page says %q; A's API has sales %+v", msg, sales)
	}
	var rowID string
	pageA.run(5*time.Second, "the sale row", chromedp.AttributeValue(byTestID("sale-row-"+sales[0].ID), "data-testid", &rowID, nil, chromedp.ByQuery))
	var cartRows int
	pageA.run(5*time.Second, "the cart", chromedp.Evaluate(`document.querySelectorAll('[data-testid^="cart-row-"]').length`, &cartRows))
	if cartRows != 0 {
		t.Errorf("cart still has %d rows after the sale", cartRows)
	}
	t.Logf("A's page: %s", msg)

	var png []byte
	pageA.run(10*time.Second, "screenshot", chromedp.FullScreenshot(&png, 100))
	if len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	shot := filepath.Join(t.TempDir(), "terminal-a.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of A's page after the sale: %s (%d bytes)", shot, len(png))
	if err := os.WriteFile("/tmp/storemesh-page.png", png, 0o644); err != nil {
		t.Logf("copy screenshot: %v", err)
	}

	// B's page, open all along, shows the stock A sold from.
	pageB.waitJS(15*time.Second, "B's stock row for TEA to show 8",
		jsTestID("stock-onhand-TEA")+`.textContent === "8" && `+jsTestID("sku-stock-TEA")+`.textContent === "on hand 8"`)
	pageB.waitJS(10*time.Second, "A's sale in B's recent sales", jsTestID("sale-row-"+sales[0].ID)+` !== null`)
	pageA.checkNoExceptions()
	pageB.checkNoExceptions()

	// Stop A: B's sync panel shows it is no longer connected, and A's own
	// page says its node is unreachable.
	start := time.Now()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	pageB.waitJS(20*time.Second, "B's sync panel to show A disconnected",
		`(() => { const p = `+jsTestID("peer-"+a.ID())+`;
		  return p !== null && p.dataset.established === "false" && /not connected|gone/.test(p.textContent); })()`)
	var peerText string
	pageB.run(5*time.Second, "reading B's peer row", chromedp.Text(byTestID("peer-"+a.ID()), &peerText, chromedp.ByQuery))
	t.Logf("B's sync panel %v after A stopped: %q", time.Since(start).Round(time.Millisecond), peerText)
	if !strings.Contains(peerText, "till-a") {
		t.Errorf("B's peer row for A does not name it: %q", peerText)
	}
	pageB.waitJS(5*time.Second, "the manager still synced on B", jsTestID("peer-"+mgr.ID())+`?.dataset.established === "true"`)
	pageA.waitJS(10*time.Second, "A's page to say its node is unreachable", jsTestID("live-badge")+`.textContent === "node unreachable"`)
	pageB.checkNoExceptions()
}

// TestBrowserAllotment: the terminal page shows an allotted SKU's units
// held here and where the rest are, and a sale past what the terminal
// holds is refused on the page with the stable code and where units are.
func TestBrowserAllotment(t *testing.T) {
	browser := startBrowser(t, 90*time.Second)
	f := newTestFleet(t, 41)
	mgr := startNode(t, f.enroll(t, "s1", ledger.RoleManager, "office"))
	term := startNode(t, f.enroll(t, "s1", ledger.RoleTerminal, "till-1"), func(c *Config) { c.Peers = []string{tcpAddr(t, mgr)} })
	setItem(t, mgr, "SCARF", "Scarf", 900)
	must(t, mgr, 200, "PUT", "/v1/allotments/SCARF", map[string]any{"allotted": true})
	must(t, mgr, 201, "POST", "/v1/stock/received", map[string]any{"sku": "SCARF", "qty": 5})
	waitFor(t, 20*time.Second, "units to reach the terminal", func() bool {
		v, w := allotOf(t, mgr, "SCARF"), allotOf(t, term, "SCARF")
		return len(v.Requests) == 0 && w.Here > 0 && len(w.Elsewhere) == 1 && w.Elsewhere[0].Units == v.Here
	})
	here := allotOf(t, term, "SCARF").Here
	want := fmt.Sprintf("%d here · %d at office", here, 5-here)

	page := openTab(t, browser, "till-1", term.URL())
	page.run(10*time.Second, "the stock row", chromedp.WaitVisible(byTestID("stock-allot-SCARF")))
	page.waitJS(10*time.Second, "the allotment column to say "+want, jsTestID("stock-allot-SCARF")+`.textContent === `+fmt.Sprintf("%q", want))

	// One more scarf than the terminal holds.
	var clicks []chromedp.Action
	for range here + 1 {
		clicks = append(clicks, chromedp.Click(byTestID("sku-SCARF"), chromedp.ByQuery))
	}
	clicks = append(clicks, chromedp.WaitEnabled(byTestID("charge"), chromedp.ByQuery), chromedp.Click(byTestID("charge"), chromedp.ByQuery))
	page.run(10*time.Second, "ringing up too many scarves", clicks...)
	page.waitJS(10*time.Second, "the refusal on the page",
		`(() => { const m = `+jsTestID("message")+`;
		  return m.classList.contains("error") && m.textContent.includes("(allotment_exhausted)") && m.textContent.includes("at office"); })()`)
	var msg string
	page.run(5*time.Second, "reading the message", chromedp.Text(byTestID("message"), &msg, chromedp.ByQuery))
	t.Logf("till-1's page: %s", msg)
	if n := len(salesOf(t, term)); n != 0 {
		t.Fatalf("%d sales stored after the refusal", n)
	}
	if oh := onHandOf(t, term, "SCARF"); oh != 5 {
		t.Fatalf("on hand %d after the refusal, want 5", oh)
	}
	page.checkNoExceptions()
}
