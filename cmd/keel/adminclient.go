package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// The admin listener's client side, for keel inspect --admin and keel
// backup --admin. Every answer is JSON; an error answer is
// {"error": "..."} with a status other than 200.

// adminTimeout bounds one request: an inspect of a large store reads it
// all, and a backup copies the WAL.
const adminTimeout = 10 * time.Minute

func adminURL(addr, path string, q url.Values) string {
	u := url.URL{Scheme: "http", Host: addr, Path: path}
	if len(q) > 0 {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func adminGet(addr, path string, q url.Values, v any) error {
	return adminDo(http.MethodGet, adminURL(addr, path, q), nil, v)
}

func adminPost(addr, path string, body, v any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return adminDo(http.MethodPost, adminURL(addr, path, nil), b, v)
}

func adminDo(method, u string, body []byte, v any) error {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := os.Getenv("KEEL_ADMIN_TOKEN"); tok != "" {
		// The admin listener's token (admin_token_file), for one that
		// is not on loopback; from the environment, never a flag, so it
		// stays out of ps and shell history.
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := (&http.Client{Timeout: adminTimeout}).Do(req)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return fmt.Errorf("admin listener: %s %s: %w", method, u, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("admin listener: %s %s: %s: %s", method, u, resp.Status, msg)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("admin listener: %s %s: bad answer: %w", method, u, err)
	}
	return nil
}
