package main

import (
	"strings"
	"testing"
	"time"
)

func TestTargets(t *testing.T) {
	m := &matrix{mc: matrixConfig{keel: "keel"}, brokers: []broker{{name: "keel"}, {name: "mosquitto"}}}
	m.results = map[string]map[string][]*result{
		"fanin-qos1-64": {
			"keel":      {{QoS: 1, DelRate: 130, BrokerCPUPerMsg: 9}, {QoS: 1, DelRate: 140, BrokerCPUPerMsg: 25}, {QoS: 1, DelRate: 120, BrokerCPUPerMsg: 10}},
			"mosquitto": {{QoS: 1, DelRate: 100}},
		},
		"fanin-qos2-64": {
			"keel":      {{QoS: 2, DelRate: 140}},
			"mosquitto": {{QoS: 2, DelRate: 100}},
		},
		"sync-qos1": {
			"keel": {{QoS: 1, AckP50: 300, Fsync: &fsyncResult{PreallocP50: 200, CPUPerSync: 50, CPUShare: 0.25}},
				{QoS: 1, AckP50: 400, Fsync: &fsyncResult{PreallocP50: 200}}},
		},
		"pairs-qos1-100": {
			"keel": {{QoS: 1, PubRate: 18500, AckMean: 5600, Lost: 3}},
		},
	}
	todo := []scenario{{name: "fanin-qos1-64"}, {name: "fanin-qos2-64"}, {name: "sync-qos1", sync: true}, {name: "pairs-qos1-100", sync: true}}
	want := map[string]string{
		"fan-in QoS 1, 64 B":           "met",     // 130/100 = 1.30
		"fan-in QoS 2, 64 B":           "not met", // 1.40 < 1.5
		"synchronous QoS 1":            "met",     // median of +100, +200 = +150
		"≥ 18,000 acked msg/s":         "met",
		"mean PUBACK ≤ 5.55 ms":        "not met",
		"broker CPU ≤ 20 µs":           "met", // median 10
		"no loss":                      "not met",
		"fan-in QoS 2, 1 KiB":          "", // not run: no row
		"fan-out QoS 1, 64 B: keel/mo": "",
	}
	rows := m.targetRows(todo)
	for key, verdict := range want {
		var found []string
		for _, r := range rows {
			if strings.Contains(r[0], key) {
				found = r
			}
		}
		switch {
		case verdict == "" && found != nil:
			t.Errorf("%q: row %q for a scenario not run", key, found)
		case verdict != "" && found == nil:
			t.Errorf("%q: no row", key)
		case verdict != "" && found[2] != verdict:
			t.Errorf("%q: %q (%s), want %q", key, found[2], found[1], verdict)
		}
	}
	if note := m.syncCPUNote(); !strings.Contains(note, "50.0µs of CPU per sync") {
		t.Errorf("sync CPU note: %q", note)
	}
}

func TestFsyncProbe(t *testing.T) {
	r, err := fsyncProbe(t.TempDir(), 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if r.AppendP50 <= 0 || r.RewriteP50 <= 0 || r.Samples < 20 {
		t.Errorf("probe: %+v", r)
	}
	if r.PreallocP50 > 0 && r.wal() != r.PreallocP50 || r.PreallocP50 == 0 && r.wal() != r.AppendP50 {
		t.Errorf("wal() = %v with prealloc p50 %v, append p50 %v", r.wal(), r.PreallocP50, r.AppendP50)
	}
}
