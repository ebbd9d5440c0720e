package main

import (
	"bytes"
	"fmt"
	"strings"
)

// A target is one of the performance goals for Keel, checked
// against the matrix's figures: the median over the repetitions.
type target struct {
	goal     string // what is asked, for people
	scenario string // scenario name; "" for every scenario
	// eval returns the measured figure (formatted), whether the goal is met,
	// and ok false when the scenario was not measured.
	eval func(m *matrix, s scenario) (figure string, met, ok bool)
}

// ratioAtLeast: Keel's deliveries per second over Mosquitto's, at least min.
func ratioAtLeast(min float64) func(*matrix, scenario) (string, bool, bool) {
	return func(m *matrix, s scenario) (string, bool, bool) {
		k := summarize(m.results[s.name]["keel"], mDel.get)
		q := summarize(m.results[s.name]["mosquitto"], mDel.get)
		if k.n == 0 || q.n == 0 || q.med == 0 {
			return "", false, false
		}
		r := k.med / q.med
		return fmt.Sprintf("%.2f (keel %s, mosquitto %s)", r, k.format(rate), q.format(rate)), r >= min, true
	}
}

// keelAtMost / keelAtLeast: a figure of Keel's, against a bound.
func keelBound(mt metric, bound float64, atMost bool) func(*matrix, scenario) (string, bool, bool) {
	return func(m *matrix, s scenario) (string, bool, bool) {
		k := summarize(m.results[s.name]["keel"], mt.get)
		if k.n == 0 {
			return "", false, false
		}
		if atMost {
			return k.format(mt.fmt), k.med <= bound, true
		}
		return k.format(mt.fmt), k.med >= bound, true
	}
}

// ackOverFsync is a run's acknowledgement p50 minus the p50 of one write +
// fdatasync measured in the same run's directory just before (as Pebble
// writes its WAL: appending into preallocated space).
func ackOverFsync(r *result) float64 {
	if r.Fsync == nil {
		return 0
	}
	return r.AckP50 - r.Fsync.wal()
}

func fsyncWAL(r *result) float64 {
	if r.Fsync == nil {
		return 0
	}
	return r.Fsync.wal()
}

var (
	mFsync = metric{label: "one fsync p50 (this run's disk, before it)", get: fsyncWAL, fmt: fmtUS, noRatio: true,
		when: func(_ scenario, r *result) bool { return r.Fsync != nil }}
	mAckOverFsync = metric{label: "ack p50 − one fsync p50", get: ackOverFsync, fmt: fmtUS, noRatio: true,
		when: func(_ scenario, r *result) bool { return r.Fsync != nil }}
	mCPUPerMsg = metric{label: "broker CPU per delivery", get: func(r *result) float64 { return r.BrokerCPUPerMsg }, fmt: perMsg}
)

var targets = []target{
	{goal: "fan-in QoS 1, 64 B: keel/mosquitto deliveries ≥ 1.3", scenario: "fanin-qos1-64", eval: ratioAtLeast(1.3)},
	{goal: "fan-in QoS 2, 64 B: keel/mosquitto deliveries ≥ 1.5", scenario: "fanin-qos2-64", eval: ratioAtLeast(1.5)},
	{goal: "fan-in QoS 2, 1 KiB: keel/mosquitto deliveries ≥ 1.5", scenario: "fanin-qos2-1k", eval: ratioAtLeast(1.5)},
	{goal: "fan-out QoS 1, 64 B: keel/mosquitto deliveries ≥ 1.0", scenario: "fanout-qos1-64", eval: ratioAtLeast(1.0)},
	{goal: "fan-out QoS 1, 1 KiB: keel/mosquitto deliveries ≥ 1.0", scenario: "fanout-qos1-1k", eval: ratioAtLeast(1.0)},
	{goal: "fan-in QoS 0: keel/mosquitto deliveries ≥ 1.0", scenario: "fanin-qos0-64", eval: ratioAtLeast(1.0)},
	{goal: "fan-out QoS 0: keel/mosquitto deliveries ≥ 1.0", scenario: "fanout-qos0-64", eval: ratioAtLeast(1.0)},
	{goal: "synchronous QoS 1: PUBACK p50 within 0.15 ms of one fsync (same run)", scenario: "sync-qos1",
		eval: func(m *matrix, s scenario) (string, bool, bool) {
			rs := m.results[s.name]["keel"]
			d := summarize(rs, mAckOverFsync.get)
			if d.n == 0 || rs[0].Fsync == nil {
				return "", false, false
			}
			ack := summarize(rs, mAckP50.get)
			fs := summarize(rs, mFsync.get)
			return fmt.Sprintf("+%s (PUBACK p50 %s, fsync p50 %s)", d.format(fmtUS), ack.format(fmtUS), fs.format(fmtUS)), d.med <= 150, true
		}},
	{goal: "100 synchronous pairs, QoS 1, 100 B: ≥ 18,000 acked msg/s", scenario: "pairs-qos1-100", eval: keelBound(mPub, 18000, false)},
	{goal: "100 synchronous pairs, QoS 1, 100 B: mean PUBACK ≤ 5.55 ms", scenario: "pairs-qos1-100", eval: keelBound(mAckMean, 5550, true)},
	{goal: "broker CPU ≤ 20 µs per delivered durable QoS 1 message (pipelined fan-in, 64 B)", scenario: "fanin-qos1-64", eval: keelBound(mCPUPerMsg, 20, true)},
	{goal: "no loss: every acknowledged QoS 1/2 message delivered (QoS 2: once), every scenario, every run", eval: noLoss},
}

// noLoss sums, over Keel's runs of every scenario, the acknowledged QoS 1/2
// messages never delivered and the QoS 2 duplicates; failed runs count.
func noLoss(m *matrix, _ scenario) (string, bool, bool) {
	var lost, dups, runs, drops int64
	for _, bs := range m.results {
		for _, r := range bs["keel"] {
			runs++
			if r.QoS >= 1 {
				lost += r.Lost
			} else {
				drops += r.Lost
			}
			if r.QoS == 2 {
				dups += r.Dups
			}
		}
	}
	if runs == 0 {
		return "", false, false
	}
	fails := 0
	for _, f := range m.fails {
		if strings.Contains(f, " on keel,") {
			fails++
		}
	}
	fig := fmt.Sprintf("%d lost, %d duplicated over %d runs; %d failed runs; QoS 0 dropped: %d", lost, dups, runs, fails, drops)
	return fig, lost == 0 && dups == 0 && fails == 0, true
}

// targetRows evaluates every target whose scenario was run: goal, figure,
// verdict.
func (m *matrix) targetRows(todo []scenario) [][]string {
	byName := map[string]scenario{}
	for _, s := range todo {
		byName[s.name] = s
	}
	var rows [][]string
	for _, t := range targets {
		s, ran := byName[t.scenario]
		if t.scenario != "" && !ran {
			continue
		}
		fig, met, ok := t.eval(m, s)
		if !ok {
			rows = append(rows, []string{t.goal, "not measured", "n/a"})
			continue
		}
		verdict := "not met"
		if met {
			verdict = "met"
		}
		rows = append(rows, []string{t.goal, fig, verdict})
	}
	return rows
}

// syncCPUNote explains the synchronous scenario's CPU per message with the
// fsync probe's CPU per sync: on this VM a sync's wait is partly charged as
// CPU time to the thread that waits.
func (m *matrix) syncCPUNote() string {
	rs := m.results["sync-qos1"]["keel"]
	if len(rs) == 0 {
		return ""
	}
	var probed []*result
	for _, r := range rs {
		if r.Fsync != nil && r.Fsync.CPUPerSync > 0 {
			probed = append(probed, r)
		}
	}
	if len(probed) == 0 {
		return ""
	}
	msgCPU := summarize(rs, mCPUPerMsg.get)
	syncCPU := summarize(probed, func(r *result) float64 { return r.Fsync.CPUPerSync })
	share := summarize(probed, func(r *result) float64 { return r.Fsync.CPUShare })
	brokerCores := summarize(rs, func(r *result) float64 { return r.BrokerCores })
	pubRate := summarize(rs, mPub.get)
	fanin := summarize(m.results["fanin-qos1-64"]["keel"], mCPUPerMsg.get)
	var b bytes.Buffer
	if fanin.n > 0 {
		fmt.Fprintf(&b, "The CPU target is judged on the pipelined fan-in (%s per delivery), where many messages share one fsync. ", fanin.format(perMsg))
	}
	fmt.Fprintf(&b, "In the synchronous 1→1 QoS 1 scenario every message waits for an fsync of its own, and this VM charges part of a sync's wait as CPU: "+
		"the probe's thread, doing nothing but 64 B writes and fdatasync, was charged %s of CPU per sync (%.0f%% of the sync's wall time). "+
		"Keel there uses %s of CPU per delivery (%s cores at %s acknowledged).",
		syncCPU.format(perMsg), 100*share.med, msgCPU.format(perMsg), brokerCores.format(cores), pubRate.format(rate))
	return b.String()
}
