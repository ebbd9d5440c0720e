package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"time"
)

// reportInfo is what the report says about the run that is not a figure:
// gathered once when the matrix ends, and saved with the results so that
// the report can be written again later (-load) with the same facts.
type reportInfo struct {
	Started   time.Time     `json:"started"`
	Elapsed   time.Duration `json:"elapsed_ns"`
	Machine   string        `json:"machine"`
	Disk      string        `json:"disk"`
	CPUs      int           `json:"cpus"`
	Mosquitto string        `json:"mosquitto_version"`
}

// savedMatrix is a finished matrix: its configuration, facts and every
// run's result (bench matrix -save; read back by -load).
type savedMatrix struct {
	Info      reportInfo                      `json:"info"`
	Command   string                          `json:"command"`
	KeelRev   string                          `json:"keel_rev"`
	KeelNote  string                          `json:"keel_note,omitempty"`
	BaseRev   string                          `json:"keel_base_rev,omitempty"`
	HaveKeel  bool                            `json:"have_keel"`
	Reps      int                             `json:"reps"`
	Duration  time.Duration                   `json:"duration_ns"`
	Warmup    time.Duration                   `json:"warmup_ns"`
	Version   int                             `json:"v"`
	Only      string                          `json:"only,omitempty"`
	Brokers   []string                        `json:"brokers"`
	Scenarios []string                        `json:"scenarios"`
	Fsync     *fsyncResult                    `json:"fsync,omitempty"`
	Results   map[string]map[string][]*result `json:"results"`
	Fails     []string                        `json:"fails,omitempty"`
}

func (m *matrix) gatherInfo() {
	m.info = reportInfo{
		Started:   m.started,
		Elapsed:   time.Since(m.started).Round(time.Second),
		Machine:   machineInfo(),
		Disk:      diskInfo(m.mc.tmp),
		CPUs:      runtime.NumCPU(),
		Mosquitto: mosquittoVersion(m.mc.mosquitto),
	}
}

func (m *matrix) save(path string, todo []scenario) error {
	s := savedMatrix{
		Info: m.info, Command: m.mc.command, KeelRev: m.mc.keelRev, KeelNote: m.mc.keelNote, BaseRev: m.mc.keelBaseRev,
		HaveKeel: m.mc.keel != "", Reps: m.mc.reps, Duration: m.mc.duration, Warmup: m.mc.warmup,
		Version: m.mc.version, Fsync: m.fsync, Results: m.results, Fails: m.fails,
	}
	if m.mc.only != nil {
		s.Only = m.mc.only.String()
	}
	for _, b := range m.brokers {
		s.Brokers = append(s.Brokers, b.name)
	}
	for _, sc := range todo {
		s.Scenarios = append(s.Scenarios, sc.name)
	}
	b, err := json.MarshalIndent(&s, "", " ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// loadMatrix rebuilds a finished matrix from a -save file, for writing its
// report again (with other notes) without measuring anything.
func loadMatrix(path string, mc matrixConfig) (*matrix, []scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var s savedMatrix
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(s.Brokers) == 0 {
		return nil, nil, fmt.Errorf("%s: no brokers", path)
	}
	mc.command, mc.keelRev, mc.keelNote = s.Command, s.KeelRev, s.KeelNote
	if mc.keelBaseRev == "" {
		mc.keelBaseRev = s.BaseRev // -keel-base-rev names it for files saved before it was saved
	}
	mc.reps, mc.duration, mc.warmup, mc.version = s.Reps, s.Duration, s.Warmup, s.Version
	mc.keel = ""
	if s.HaveKeel {
		mc.keel = "keel"
	}
	if s.Only != "" {
		mc.only, _ = regexp.Compile(s.Only)
	}
	m := &matrix{mc: mc, info: s.Info, started: s.Info.Started, fsync: s.Fsync, results: s.Results, fails: s.Fails}
	if m.results == nil {
		m.results = map[string]map[string][]*result{}
	}
	for _, name := range s.Brokers {
		m.brokers = append(m.brokers, broker{name: name})
	}
	var todo []scenario
	for _, name := range s.Scenarios {
		found := false
		for _, sc := range scenarios {
			if sc.name == name {
				todo, found = append(todo, sc), true
			}
		}
		if !found {
			return nil, nil, fmt.Errorf("%s: unknown scenario %q", path, name)
		}
	}
	return m, todo, nil
}
