package sim

import (
	"fmt"
	"io"
	"strings"
)

// WriteSVG draws the run over virtual time: the fraction of replicas
// holding everything their scope's freshest replica holds (top) and the
// queue depth, frames in flight plus ops held for a predecessor (bottom).
// Faults are shaded; the quiet point and convergence are marked. Plain
// SVG, written by hand: no dependencies.
func (r *Report) WriteSVG(w io.Writer) error {
	const (
		width, height = 900, 440
		left, right   = 70, 20
		top1, bot1    = 50, 210 // replicas up to date, 0..1
		top2, bot2    = 260, 400
	)
	end := max(r.VirtualS, 1)
	x := func(t float64) float64 { return left + (width-left-right)*t/end }
	maxQ := 1
	for _, s := range r.Samples {
		maxQ = max(maxQ, s.InFlight+s.Held)
	}
	var b strings.Builder
	p := func(f string, a ...any) { fmt.Fprintf(&b, f+"\n", a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`, width, height, width, height)
	p(`<rect width="100%%" height="100%%" fill="white"/>`)
	status := "PASS"
	if r.Failed() {
		status = fmt.Sprintf("FAIL (%d)", len(r.Failures))
	}
	p(`<text x="%d" y="20" font-size="14" font-weight="bold">%s, seed %d: %s</text>`, left, xmlEscape(r.Scenario), r.Seed, status)
	p(`<text x="%d" y="36" fill="#555">%d nodes, %d ops, %d frames; converged %s</text>`, left, r.Nodes, r.Ops.Total, r.Wire.FramesDelivered, convergedText(r))
	for _, m := range r.Marks {
		p(`<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#f4a261" fill-opacity="0.15"><title>%s</title></rect>`,
			x(m.From), top1, max(x(m.To)-x(m.From), 0.5), bot2-top1, xmlEscape(m.What))
	}
	for _, panel := range []struct {
		top, bot int
		title    string
	}{{top1, bot1, "replicas up to date (fraction)"}, {top2, bot2, fmt.Sprintf("queue depth: frames in flight + held ops (max %d)", maxQ)}} {
		p(`<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`, left, panel.top, width-left-right, panel.bot-panel.top)
		p(`<text x="%d" y="%d" fill="#333">%s</text>`, left+4, panel.top-4, panel.title)
		for k := 0; k <= 5; k++ {
			t := end * float64(k) / 5
			p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`, x(t), panel.top, x(t), panel.bot)
			p(`<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>`, x(t), panel.bot+13, fmtSeconds(t))
		}
	}
	p(`<text x="%d" y="%d" text-anchor="end">1</text><text x="%d" y="%d" text-anchor="end">0</text>`, left-4, top1+4, left-4, bot1)
	p(`<text x="%d" y="%d" text-anchor="end">%d</text><text x="%d" y="%d" text-anchor="end">0</text>`, left-4, top2+4, maxQ, left-4, bot2)
	var up, q, held strings.Builder
	for _, s := range r.Samples {
		fmt.Fprintf(&up, "%.1f,%.1f ", x(s.T), bot1-(bot1-top1)*s.UpToDate)
		fmt.Fprintf(&q, "%.1f,%.1f ", x(s.T), bot2-(bot2-top2)*float64(s.InFlight+s.Held)/float64(maxQ))
		fmt.Fprintf(&held, "%.1f,%.1f ", x(s.T), bot2-(bot2-top2)*float64(s.Held)/float64(maxQ))
	}
	p(`<polyline fill="none" stroke="#2a9d8f" stroke-width="1.5" points="%s"/>`, strings.TrimSpace(up.String()))
	p(`<polyline fill="none" stroke="#264653" stroke-width="1.2" points="%s"/>`, strings.TrimSpace(q.String()))
	p(`<polyline fill="none" stroke="#e76f51" stroke-width="1" points="%s"><title>held ops</title></polyline>`, strings.TrimSpace(held.String()))
	line := func(t float64, color, label string) {
		p(`<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-dasharray="4 3"/>`, x(t), top1, x(t), bot2, color)
		p(`<text x="%.1f" y="%d" fill="%s" text-anchor="end">%s</text>`, x(t)-3, bot2+28, color, label)
	}
	line(r.QuietS, "#6c757d", "quiet")
	if r.LastHealS > 0 {
		line(r.LastHealS, "#e76f51", "last heal")
	}
	if r.Converged {
		line(r.ConvergedAtS, "#2a9d8f", "converged")
	}
	p(`<text x="%d" y="%d" fill="#555">virtual time; shaded: faults (partitions, cuts, crashes, restores); red: held ops</text>`, left, height-6)
	p(`</svg>`)
	_, err := io.WriteString(w, b.String())
	return err
}

func convergedText(r *Report) string {
	if !r.Converged {
		return "NO"
	}
	return fmt.Sprintf("%.1f s after the quiet point", r.ConvergenceS)
}

func fmtSeconds(t float64) string {
	switch {
	case t >= 3600:
		return fmt.Sprintf("%.1fh", t/3600)
	case t >= 60:
		return fmt.Sprintf("%.1fm", t/60)
	}
	return fmt.Sprintf("%.0fs", t)
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")

func xmlEscape(s string) string { return xmlEscaper.Replace(s) }
