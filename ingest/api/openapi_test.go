package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ivms/ams/pkg/devicestate"
)

// TestOpenAPIServed checks the document is served without a token, is the
// one OpenAPI builds, and names exactly the routes the server serves, with
// a body schema for every command kind.
func TestOpenAPIServed(t *testing.T) {
	h := newHarness(t)
	resp, err := http.Get(h.srv.URL + OpenAPIPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s without a token: %d %s", OpenAPIPath, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc struct {
		OpenAPI    string                    `json:"openapi"`
		Paths      map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas         map[string]any `json:"schemas"`
			SecuritySchemes map[string]struct {
				Type, Scheme string
			} `json:"securitySchemes"`
		} `json:"components"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || doc.Components.SecuritySchemes["bearer"].Scheme != "bearer" {
		t.Errorf("openapi %q, security schemes %v", doc.OpenAPI, doc.Components.SecuritySchemes)
	}
	s, _ := New(Config{Token: "x"}, nil, nil, nil, nil, nil)
	want := map[string]bool{"GET " + OpenAPIPath: true}
	for _, r := range s.routes() {
		want[r.method+" "+r.path] = true
	}
	got := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			got[strings.ToUpper(m)+" "+p] = true
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("document's operations %v\nserver's routes %v", got, want)
	}
	// Every route is served: a request to each is not the 404 fallback.
	for r := range want {
		m, p, _ := strings.Cut(r, " ")
		p = strings.NewReplacer("{sn}", "SN1", "{id}", "c1").Replace(p)
		code, body := h.do(t, m, p, "")
		if code == http.StatusNotFound && strings.HasPrefix(fmt.Sprint(body["error"]), "no route") {
			t.Errorf("%s: documented but not served", r)
		}
	}
	for _, k := range []string{"reboot", "osd", "face_snapshot", "stream_control"} {
		if doc.Components.Schemas["CommandBody_"+k] == nil {
			t.Errorf("no CommandBody_%s schema", k)
		}
	}
}

// TestOpenAPIRefusesWhatTheServerRefuses sends requests the document calls
// invalid (a wrong osd body, an unknown kind, an unknown member); the
// validating harness fails the test if the server accepted any of them.
func TestOpenAPIRefusesWhatTheServerRefuses(t *testing.T) {
	h := newHarness(t)
	for _, body := range []string{
		`{"kind":"osd","body":{"sOsdName":"front door"}}`,
		`{"kind":"nope"}`,
		`{"kind":"reboot","color":"red"}`,
		`{"kind":"face_snapshot","body":{}}`,
		`{"kind":"reset"}`,
	} {
		if code, resp := h.do(t, "POST", "/v1/devices/SN1/commands", body); code != http.StatusBadRequest {
			t.Errorf("%s: %d %v", body, code, resp)
		}
	}
	if code, resp := h.do(t, "POST", "/v1/devices/SN1/commands", `{"kind":"osd","body":{"sOsdName":{"iEnable":1,"strText":"front door"}}}`); code != http.StatusAccepted {
		t.Errorf("osd with the documented shape: %d %v", code, resp)
	}
}

// TestUnknownRouteAndMethodAreJSON: 404 and 405 answer the JSON error shape.
func TestUnknownRouteAndMethodAreJSON(t *testing.T) {
	h := newHarness(t)
	code, body := h.do(t, "GET", "/v1/nope", "")
	if code != http.StatusNotFound || !strings.Contains(fmt.Sprint(body["error"]), "no route GET /v1/nope") {
		t.Errorf("unknown route: %d %v", code, body)
	}
	req, _ := http.NewRequest("PATCH", h.srv.URL+"/v1/devices/SN1", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e apiError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusMethodNotAllowed ||
		resp.Header.Get("Allow") != "GET, HEAD, PUT, DELETE" || !strings.Contains(e.Error, "PATCH is not allowed") {
		t.Errorf("wrong method: %d Allow %q %+v %v", resp.StatusCode, resp.Header.Get("Allow"), e, err)
	}
}

// TestListDevices: without online every device (both presences, merged in
// sn order across pages); online=1/0 and true/false filter; other values
// are refused naming what is accepted.
func TestListDevices(t *testing.T) {
	h := newHarness(t)
	h.state.mu.Lock()
	for i := range 9 {
		sn := fmt.Sprintf("SN0%d", i)
		h.state.devices[sn] = devicestate.Device{SN: sn, Online: i%3 == 0}
	}
	h.state.mu.Unlock()
	var all []string
	cursor := ""
	for page := 0; ; page++ {
		code, body := h.do(t, "GET", "/v1/devices?limit=2&cursor="+cursor, "")
		if code != http.StatusOK || page > 10 {
			t.Fatalf("page %d: %d %v", page, code, body)
		}
		for _, d := range body["devices"].([]any) {
			all = append(all, d.(map[string]any)["sn"].(string))
		}
		if cursor = body["next_cursor"].(string); cursor == "" {
			break
		}
	}
	// SN1 is the harness's registered device (offline).
	if want := "[SN00 SN01 SN02 SN03 SN04 SN05 SN06 SN07 SN08 SN1]"; fmt.Sprint(all) != want {
		t.Errorf("all devices = %v, want %s", all, want)
	}
	for q, n := range map[string]int{"1": 3, "true": 3, "0": 7, "false": 7} {
		code, body := h.do(t, "GET", "/v1/devices?online="+q, "")
		if code != http.StatusOK || len(body["devices"].([]any)) != n {
			t.Errorf("online=%s: %d %v", q, code, body)
		}
	}
	for _, q := range []string{"yes", "TRUE"} {
		code, body := h.do(t, "GET", "/v1/devices?online="+q, "")
		if code != http.StatusBadRequest || body["field"] != "online" || !strings.Contains(fmt.Sprint(body["error"]), "true, false, 1 or 0") {
			t.Errorf("online=%s: %d %v", q, code, body)
		}
	}
}
