// Package registryimport moves the old service's device list into ams: it
// reads an export (CSV with a header, or JSON lines) of sn, token, bound and
// name, and registers each device through ams's HTTP API (PUT
// /v1/devices/{sn}), the same code path as any registration, which writes
// it to the compacted ams.registry.
//
// Guarantees: every row is either written or reported as refused with its
// line and reason (never skipped silently); a second run of the same export
// leaves the same registrations (PUT sets the same token, bound and name);
// the token is sent only to the API and never printed.
package registryimport

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/protocol"
)

// Limits the API enforces too (ingest/api); checked here so a bad row is
// reported with its line before anything is sent.
const (
	MaxTokenLen = 256
	MaxNameLen  = 64
)

// Row is one device of the export.
type Row struct {
	Line  int // line of the export (1-based; a CSV header is line 1)
	SN    string
	Token string
	Bound bool
	Name  string
}

// Refusal is a row that was not written, and why.
type Refusal struct {
	Line   int    `json:"line"`
	SN     string `json:"sn,omitempty"`
	Reason string `json:"reason"`
}

// Report is the outcome of one import.
type Report struct {
	Rows     int       `json:"rows"`     // data rows read
	Created  int       `json:"created"`  // devices new to ams
	Updated  int       `json:"updated"`  // devices ams had already (a rerun updates them all to the same values)
	Refused  []Refusal `json:"refused"`  // rows not written
	Complete bool      `json:"complete"` // every row was read (false: the input stopped early)
}

// Format is the export's format.
type Format string

const (
	CSV       Format = "csv"   // a header naming sn, token, bound, name (any order; other columns ignored)
	JSONLines Format = "jsonl" // one object per line: {"sn","token","bound","name"}
)

// FormatOf guesses the format from a file name: .csv is CSV, anything else JSON lines.
func FormatOf(name string) Format {
	if strings.HasSuffix(strings.ToLower(name), ".csv") {
		return CSV
	}
	return JSONLines
}

// Read parses the export and calls row for every valid row; rows that do
// not parse or validate go to refused. Duplicate serial numbers refuse the
// later rows (which of two registrations is right is not for a tool to guess).
func Read(r io.Reader, f Format, row func(Row), refused func(Refusal)) error {
	seen := map[string]int{}
	emit := func(rw Row, err error) {
		if err == nil {
			if first, dup := seen[rw.SN]; dup {
				err = fmt.Errorf("duplicate sn (first on line %d)", first)
			} else {
				seen[rw.SN] = rw.Line
			}
		}
		if err != nil {
			refused(Refusal{Line: rw.Line, SN: rw.SN, Reason: err.Error()})
			return
		}
		row(rw)
	}
	switch f {
	case CSV:
		return readCSV(r, emit)
	case JSONLines:
		return readJSONLines(r, emit)
	default:
		return fmt.Errorf("registryimport: unknown format %q (csv or jsonl)", f)
	}
}

func readCSV(r io.Reader, emit func(Row, error)) error {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return fmt.Errorf("registryimport: csv header: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	for _, need := range []string{"sn", "token"} {
		if _, ok := col[need]; !ok {
			return fmt.Errorf("registryimport: csv header %v has no %q column", header, need)
		}
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				emit(Row{Line: pe.Line}, fmt.Errorf("csv: %v", pe.Err))
				continue
			}
			return fmt.Errorf("registryimport: csv: %w", err)
		}
		get := func(name string) (string, bool) {
			i, ok := col[name]
			if !ok || i >= len(rec) {
				return "", false
			}
			return strings.TrimSpace(rec[i]), true
		}
		rw := Row{Line: line}
		rw.SN, _ = get("sn")
		rw.Token, _ = get("token")
		rw.Name, _ = get("name")
		var berr error
		if b, ok := get("bound"); ok && b != "" {
			rw.Bound, berr = parseBool(b)
		}
		emit(rw, errors.Join(berr, validate(rw)))
	}
}

func readJSONLines(r io.Reader, emit func(Row, error)) error {
	line := 0
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("registryimport: read: %w", err)
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		line++
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var v struct {
			SN    string `json:"sn"`
			Token string `json:"token"`
			Bound any    `json:"bound"`
			Name  string `json:"name"`
		}
		d := json.NewDecoder(bytes.NewReader(l))
		d.DisallowUnknownFields()
		if err := d.Decode(&v); err != nil {
			emit(Row{Line: line}, fmt.Errorf("json: %v", err))
			continue
		}
		rw := Row{Line: line, SN: strings.TrimSpace(v.SN), Token: v.Token, Name: v.Name}
		var berr error
		switch b := v.Bound.(type) {
		case nil:
		case bool:
			rw.Bound = b
		case float64:
			rw.Bound, berr = parseBool(strconv.FormatFloat(b, 'f', -1, 64))
		case string:
			rw.Bound, berr = parseBool(b)
		default:
			berr = fmt.Errorf("bound %v is not a boolean", b)
		}
		emit(rw, errors.Join(berr, validate(rw)))
	}
	return nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true", "yes", "y", "t":
		return true, nil
	case "0", "false", "no", "n", "f", "":
		return false, nil
	}
	return false, fmt.Errorf("bound %q is not a boolean (true/false, 1/0, yes/no)", s)
}

func validate(r Row) error {
	var errs []error
	if !protocol.ValidSN(r.SN) {
		errs = append(errs, fmt.Errorf("sn %q is not a valid serial number", r.SN))
	}
	if len(r.Token) < deviceauth.MinDeviceTokenLen || len(r.Token) > MaxTokenLen {
		errs = append(errs, fmt.Errorf("token must be %d to %d bytes", deviceauth.MinDeviceTokenLen, MaxTokenLen))
	}
	if !utf8.ValidString(r.Name) || utf8.RuneCountInString(r.Name) > MaxNameLen {
		errs = append(errs, fmt.Errorf("name must be valid UTF-8 of at most %d characters", MaxNameLen))
	}
	return errors.Join(errs...)
}

// Client registers devices through the ams API.
type Client struct {
	HTTP    *http.Client // nil: http.DefaultClient
	BaseURL string       // the API, e.g. http://ams-api:8080
	Token   string       // the API's bearer token (never logged)
}

// Put registers one row; created reports whether ams did not know the device.
// An answer other than 200/201 is an error carrying the API's reason.
func (c *Client) Put(ctx context.Context, r Row) (created bool, err error) {
	body, err := json.Marshal(map[string]any{"token": r.Token, "bound": r.Bound, "name": r.Name})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut,
		strings.TrimRight(c.BaseURL, "/")+"/v1/devices/"+url.PathEscape(r.SN), bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("registryimport: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("registryimport: PUT %s: %w", r.SN, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusCreated:
		return true, nil
	case http.StatusOK:
		return false, nil
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return false, &APIError{Status: resp.StatusCode, Reason: e.Error}
	}
	return false, &APIError{Status: resp.StatusCode, Reason: strings.TrimSpace(string(b))}
}

// APIError is an answer of the API that refused a registration.
type APIError struct {
	Status int
	Reason string
}

func (e *APIError) Error() string { return fmt.Sprintf("api %d: %s", e.Status, e.Reason) }

// Permanent reports whether retrying cannot help (a 4xx other than 429).
func (e *APIError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests
}

// Import reads the export and registers every valid row. A row the API
// refuses (4xx) is reported; any other failure (API down, 5xx) stops the
// import with an error, and the report says how far it got: rerun it, rows
// already written are written again to the same values.
func Import(ctx context.Context, c *Client, r io.Reader, f Format) (Report, error) {
	var rep Report
	var rows []Row
	err := Read(r, f, func(rw Row) { rows = append(rows, rw) }, func(x Refusal) { rep.Refused = append(rep.Refused, x) })
	rep.Rows = len(rows) + len(rep.Refused)
	if err != nil {
		return rep, err
	}
	for _, rw := range rows {
		created, err := c.Put(ctx, rw)
		var ae *APIError
		switch {
		case err == nil && created:
			rep.Created++
		case err == nil:
			rep.Updated++
		case errors.As(err, &ae) && ae.Permanent():
			rep.Refused = append(rep.Refused, Refusal{Line: rw.Line, SN: rw.SN, Reason: ae.Error()})
		default:
			return rep, fmt.Errorf("registryimport: stopped at line %d (%s): %w", rw.Line, rw.SN, err)
		}
	}
	rep.Complete = true
	return rep, nil
}
