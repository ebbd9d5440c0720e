package main

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
)

// metricRE finds metric names in PromQL: keel's, Go's and the process's.
var metricRE = regexp.MustCompile(`\b(?:keel|go|process)_[a-z0-9_]+\b`)

// The Grafana dashboard and the alerting rules name only metrics a real
// keel serves on /metrics.
func TestDashboardAndAlertsNameServedMetrics(t *testing.T) {
	k := startKeel(t, "serve", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--data", t.TempDir()+"/data")
	code, body := get(t, "http://"+k.metrics+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	served := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		served[strings.FieldsFunc(l, func(r rune) bool { return r == '{' || r == ' ' })[0]] = true
	}
	k.stop(t)

	b, err := os.ReadFile("../../tools/grafana/keel.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("tools/grafana/keel.json: %v", err)
	}
	if len(dash.Panels) < 10 {
		t.Errorf("dashboard has %d panels", len(dash.Panels))
	}
	check := func(where, expr string) {
		names := metricRE.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q names no metric", where, expr)
		}
		for _, n := range names {
			if !served[n] {
				t.Errorf("%s: %q names %s, which /metrics does not serve", where, expr, n)
			}
		}
	}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			check("dashboard panel "+p.Title, q.Expr)
		}
	}
	alerts, err := os.ReadFile("../../tools/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(alerts), "\n") {
		if expr, ok := strings.CutPrefix(strings.TrimSpace(l), "expr: "); ok {
			n++
			if strings.HasPrefix(expr, "up{") {
				continue // Prometheus's own
			}
			check("alert", expr)
		}
	}
	if n < 5 {
		t.Errorf("alerts.yml has %d rules", n)
	}
}
