package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ivms/ams/pkg/commandkinds"
	"github.com/ivms/ams/pkg/deviceauth"
	"github.com/ivms/ams/pkg/devicestate"
)

// OpenAPIPath is where the API's OpenAPI 3.1 document is served (without
// authentication: it describes the API and holds no data).
const OpenAPIPath = "/v1/openapi.json"

// route is one API route and its description. Register serves exactly the
// routes of Server.routes and OpenAPI describes exactly them, so the document
// cannot name a route the server lacks or miss one it has.
type route struct {
	method, path string
	h            http.HandlerFunc
	scope        Scope // the token scope the route needs (Principal.Allows)
	op           operation
}

// operation describes a route for the OpenAPI document.
type operation struct {
	id, summary, description string
	params                   []param
	body                     any // a value of the request body's Go type (nil: no body)
	bodySchema               map[string]any
	loose                    bool // the body is decoded ignoring unknown members
	responses                []response
}

type param struct {
	in, name, description string
	required              bool
	schema                map[string]any
}

type response struct {
	status      int
	description string
	body        any // a value of the answer's Go type (nil: no body); errors use apiError
}

var snSchema = map[string]any{"type": "string", "minLength": 1, "maxLength": 64, "pattern": `^[!-~]+$`,
	"description": "the device's serial number: printable ASCII without '/', '+' or '#'", "examples": []string{"02931117C6ED8D30"}}

func errResp(status int, description string) response {
	return response{status: status, description: description, body: apiError{}}
}

// routes is the table of the API.
func (s *Server) routes() []route {
	snPath := param{in: "path", name: "sn", required: true, schema: snSchema}
	unauthorized := errResp(http.StatusUnauthorized, "missing or wrong bearer token")
	internal := errResp(http.StatusInternalServerError, "internal error (logged)")
	unavailable := errResp(http.StatusServiceUnavailable, "the request was canceled, or Redis is unavailable")
	durationSchema := func(desc, example string) map[string]any {
		return map[string]any{"type": "string", "description": desc, "examples": []string{example}}
	}
	return []route{
		{"POST", "/v1/devices/{sn}/commands", s.postCommand, ScopeCommand, operation{
			id: "postCommand", summary: "send a command to a device",
			description: "Writes a command to ams.commands (acknowledged by Kafka before the answer). The body's shape depends on kind: see GET /v1/command-kinds and the CommandBody_* schemas.",
			params: []param{snPath,
				{in: "query", name: "wait", description: "wait up to this long (capped by -max-wait) for the command's final state", schema: durationSchema("a Go duration", "15s")},
				{in: "header", name: IdempotencyHeader, description: "the command id; a retried request with the same key writes the same id",
					schema: map[string]any{"type": "string", "minLength": 1, "maxLength": maxIDLen, "pattern": `^[A-Za-z0-9._:-]+$`}}},
			bodySchema: commandRequestSchema(),
			responses: []response{
				{http.StatusOK, "with ?wait: the command reached a final state", devicestate.Command{}},
				{http.StatusAccepted, "the command is in the log (with ?wait: not final yet; state is the latest)", CommandAccepted{}},
				errResp(http.StatusBadRequest, "a bad request; field names the offending member (body.iReboot, kind, timeout...)"),
				unauthorized, errResp(http.StatusNotFound, "the device is not registered"), internal, unavailable}}},
		{"GET", "/v1/commands/{id}", s.getCommand, ScopeRead, operation{
			id: "getCommand", summary: "a command's state and history",
			params: []param{{in: "path", name: "id", required: true, schema: map[string]any{"type": "string", "minLength": 1, "maxLength": maxIDLen, "pattern": `^[A-Za-z0-9._:-]+$`}}},
			responses: []response{{http.StatusOK, "the command", devicestate.Command{}},
				errResp(http.StatusBadRequest, "bad command id"), unauthorized,
				errResp(http.StatusNotFound, "unknown, or not yet accepted by the processors"), internal, unavailable}}},
		{"GET", "/v1/devices/{sn}", s.getDevice, ScopeRead, operation{
			id: "getDevice", summary: "a device's presence, session, configuration, registration and pending commands",
			params: []param{snPath},
			responses: []response{{http.StatusOK, "the device", devicestate.Device{}},
				errResp(http.StatusBadRequest, "bad sn"), unauthorized, errResp(http.StatusNotFound, "unknown device"), internal, unavailable}}},
		{"GET", "/v1/devices", s.listDevices, ScopeRead, operation{
			id: "listDevices", summary: "a page of devices in sn order",
			description: "Every device with a known presence, or only those online (online=true) or offline (online=false). Pages: pass next_cursor as cursor until it is empty.",
			params: []param{
				{in: "query", name: "online", description: "true (or 1) only online devices, false (or 0) only offline ones; omitted: all",
					schema: map[string]any{"type": "string", "enum": []string{"true", "false", "1", "0"}}},
				{in: "query", name: "cursor", description: "next_cursor of the previous page", schema: map[string]any{"type": "string"}},
				{in: "query", name: "limit", description: fmt.Sprintf("page size, 1..%d (default %d)", s.cfg.MaxLimit, s.cfg.DefaultLimit),
					schema: map[string]any{"type": "integer", "minimum": 1, "maximum": s.cfg.MaxLimit}}},
			responses: []response{{http.StatusOK, "a page", deviceList{}},
				errResp(http.StatusBadRequest, "a bad parameter"), unauthorized, internal, unavailable}}},
		{"PUT", "/v1/devices/{sn}", s.putDevice, ScopeAdmin, operation{
			id: "putDevice", summary: "register or update a device",
			description: "Writes a registration to ams.registry; omitted fields keep their value; a new device needs a token (stored only as its sha256).",
			params:      []param{snPath}, body: DeviceRequest{},
			responses: []response{{http.StatusOK, "updated", DeviceRegistered{}}, {http.StatusCreated, "registered", DeviceRegistered{}},
				errResp(http.StatusBadRequest, "a bad field"), unauthorized, internal, unavailable}}},
		{"DELETE", "/v1/devices/{sn}", s.deleteDevice, ScopeAdmin, operation{
			id: "deleteDevice", summary: "unregister a device (a tombstone on ams.registry)",
			params: []param{snPath},
			responses: []response{{http.StatusNoContent, "unregistered", nil},
				errResp(http.StatusBadRequest, "bad sn"), unauthorized, internal, unavailable}}},
		{"GET", "/v1/command-kinds", s.listKinds, ScopeRead, operation{
			id: "listCommandKinds", summary: "the commands a device understands, each with its body's JSON Schema",
			responses: []response{{http.StatusOK, "the table of pkg/commandkinds", kindList{}}, unauthorized}}},
		{"POST", "/v1/emqx/auth", s.emqxAuth, ScopeBrokerAuth, operation{
			id: "emqxAuth", summary: "EMQX 5 HTTP authentication", body: deviceauth.Login{}, loose: true,
			responses: []response{{http.StatusOK, "the decision", emqxResult{}},
				errResp(http.StatusBadRequest, "not JSON"), unauthorized, errResp(http.StatusServiceUnavailable, "Redis is down (EMQX: ignore)")}}},
		{"POST", "/v1/emqx/acl", s.emqxACL, ScopeBrokerAuth, operation{
			id: "emqxACL", summary: "EMQX 5 HTTP authorization", body: deviceauth.Access{}, loose: true,
			responses: []response{{http.StatusOK, "the decision", emqxResult{}},
				errResp(http.StatusBadRequest, "not JSON"), unauthorized}}},
	}
}

// deviceList is the answer of GET /v1/devices.
type deviceList struct {
	Devices    []devicestate.Device `json:"devices"`
	NextCursor string               `json:"next_cursor"` // "" on the last page
}

// kindList is the answer of GET /v1/command-kinds.
type kindList struct {
	Kinds []kindInfo `json:"kinds"`
}

// commandRequestSchema is CommandRequest's schema with kind's allowed values
// and, per kind, its body's schema (if kind is K then body is CommandBody_K).
func commandRequestSchema() map[string]any {
	s := schemaFor(reflect.TypeFor[CommandRequest](), strictBody, nil)
	props := s["properties"].(map[string]any)
	props["kind"] = map[string]any{"type": "string", "enum": commandkinds.Names(), "description": "the command; see GET /v1/command-kinds"}
	props["offline"] = map[string]any{"type": "string", "enum": []string{"", "queue", "reject"}, "description": "when the device is offline: queue (default) or reject"}
	props["timeout"] = map[string]any{"type": "string", "description": "reply timeout once sent, a Go duration; empty: the processors' default", "examples": []string{"30s"}}
	props["expires"] = map[string]any{"type": "string", "description": "a queued command not sent within this expires, a Go duration; empty: the default", "examples": []string{"10m"}}
	props["body"] = map[string]any{"description": "the command's JSON object, by kind (CommandBody_<kind>); may be omitted or null when the kind has a default"}
	s["required"] = []string{"kind"}
	var conds []any
	for _, k := range commandkinds.All() {
		body := map[string]any{"$ref": "#/components/schemas/CommandBody_" + k.Name}
		if k.Default != "" {
			body = map[string]any{"anyOf": []any{body, map[string]any{"type": "null"}}}
		}
		then := map[string]any{"properties": map[string]any{"body": body}}
		if k.Default == "" {
			then["required"] = []string{"body"}
		}
		conds = append(conds, map[string]any{
			"if":   map[string]any{"properties": map[string]any{"kind": map[string]any{"const": k.Name}}, "required": []string{"kind"}},
			"then": then,
		})
	}
	s["allOf"] = conds
	s["examples"] = []any{json.RawMessage(`{"kind":"reboot"}`),
		json.RawMessage(`{"kind":"osd","body":{"sOsdName":{"iEnable":1,"strText":"front door"}},"timeout":"30s","offline":"reject"}`)}
	return s
}

// OpenAPI returns the API's OpenAPI 3.1 document.
func (s *Server) OpenAPI() map[string]any {
	components := map[string]any{}
	paths := map[string]any{}
	for _, r := range s.routes() {
		op := map[string]any{"operationId": r.op.id, "summary": r.op.summary, "x-ams-scope": string(r.scope)}
		op["description"] = strings.TrimSpace(r.op.description + " Needs a token of scope " + string(r.scope) + " (or wider).")
		var params []any
		for _, p := range r.op.params {
			pm := map[string]any{"in": p.in, "name": p.name, "schema": p.schema}
			if p.required {
				pm["required"] = true
			}
			if p.description != "" {
				pm["description"] = p.description
			}
			params = append(params, pm)
		}
		if len(params) > 0 {
			op["parameters"] = params
		}
		if r.op.body != nil || r.op.bodySchema != nil {
			bs := r.op.bodySchema
			if bs == nil {
				mode := strictBody
				if r.op.loose {
					mode = looseBody
				}
				bs = schemaFor(reflect.TypeOf(r.op.body), mode, components)
			}
			op["requestBody"] = map[string]any{"required": true,
				"content": map[string]any{"application/json": map[string]any{"schema": bs}}}
		}
		resps := map[string]any{}
		// Every route is authenticated: a token whose scope does not allow
		// it gets a 403 (a missing or wrong token a 401, listed per route).
		for _, rs := range append(r.op.responses, errResp(http.StatusForbidden, "the token's scope does not allow this route (x-ams-scope)")) {
			rm := map[string]any{"description": rs.description}
			if rs.body != nil {
				rm["content"] = map[string]any{"application/json": map[string]any{"schema": schemaRef(reflect.TypeOf(rs.body), components)}}
			}
			resps[strconv.Itoa(rs.status)] = rm
		}
		op["responses"] = resps
		item, _ := paths[r.path].(map[string]any)
		if item == nil {
			item = map[string]any{}
			paths[r.path] = item
		}
		item[strings.ToLower(r.method)] = op
	}
	paths[OpenAPIPath] = map[string]any{"get": map[string]any{
		"operationId": "openapi", "summary": "this document", "security": []any{},
		"responses": map[string]any{"200": map[string]any{"description": "the OpenAPI 3.1 document",
			"content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"type": "object"}}}}}}}
	for _, k := range commandkinds.All() {
		components["CommandBody_"+k.Name] = k.JSONSchema()
	}
	components["Error"] = schemaFor(reflect.TypeFor[apiError](), answer, components)
	return map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{"title": "ams API", "version": "1",
			"description": "The HTTP JSON API of ams (`ams api`). Every route but " + OpenAPIPath + " requires a bearer token. Errors are {\"error\": \"what is wrong\", \"field\": \"the offending field\"}, also for unknown routes (404) and wrong methods (405)."},
		"paths":    paths,
		"security": []any{map[string]any{"bearer": []any{}}},
		"components": map[string]any{
			"schemas": components,
			"securitySchemes": map[string]any{"bearer": map[string]any{"type": "http", "scheme": "bearer",
				"description": "a named API token of -api-tokens-file; its scope (read < command < admin; broker-auth only for /v1/emqx/*) must allow the operation (x-ams-scope)"}},
		},
	}
}

// schemaRef returns a $ref to t's schema in components (added there under
// t's name), or the schema itself for types without a name.
func schemaRef(t reflect.Type, components map[string]any) map[string]any {
	if t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Time]() && t.Name() != "" {
		name := componentName(t)
		if _, ok := components[name]; !ok {
			components[name] = nil // recursion guard
			components[name] = schemaFor(t, answer, components)
		}
		return map[string]any{"$ref": "#/components/schemas/" + name}
	}
	return schemaFor(t, answer, components)
}

func componentName(t reflect.Type) string {
	switch n := t.Name(); n {
	case "apiError":
		return "Error"
	case "emqxResult":
		return "EMQXResult"
	case "kindInfo":
		return "CommandKind"
	default:
		return strings.ToUpper(n[:1]) + n[1:]
	}
}

// schema modes: how a struct's members are read.
type schemaMode int

const (
	answer     schemaMode = iota // a field without omitempty is always written: required
	strictBody                   // a request body decoded strictly: no member required, no unknown member
	looseBody                    // a request body decoded loosely: unknown members ignored
)

// schemaFor builds a JSON Schema from a Go type as encoding/json writes it:
// a field without omitempty is required (strict: a request body, where no
// member is required and unknown members are refused); time.Time is a
// date-time string, json.RawMessage any JSON, a nil slice or pointer null.
func schemaFor(t reflect.Type, mode schemaMode, components map[string]any) map[string]any {
	switch t {
	case reflect.TypeFor[time.Time]():
		return map[string]any{"type": "string", "format": "date-time"}
	case reflect.TypeFor[json.RawMessage]():
		return map[string]any{"description": "any JSON value"}
	}
	switch t.Kind() {
	case reflect.Pointer:
		inner := schemaFor(t.Elem(), mode, components)
		if t.Elem().Kind() == reflect.Struct && t.Elem() != reflect.TypeFor[time.Time]() {
			inner = schemaRef(t.Elem(), components)
		}
		return nullable(inner)
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return map[string]any{"type": "integer"}
	case reflect.Float32, reflect.Float64:
		return map[string]any{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": []string{"array", "null"}, "items": schemaRef(t.Elem(), components)}
	case reflect.Map:
		return map[string]any{"type": "object"}
	case reflect.Interface:
		return map[string]any{}
	case reflect.Struct:
		props := map[string]any{}
		var required []string
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
				props[name] = schemaRef(f.Type, components)
			} else {
				props[name] = schemaFor(f.Type, mode, components)
			}
			if mode == answer && !slices.Contains(strings.Split(opts, ","), "omitempty") {
				required = append(required, name)
			}
		}
		out := map[string]any{"type": "object", "properties": props}
		if len(required) > 0 {
			out["required"] = required
		}
		if mode == strictBody {
			out["additionalProperties"] = false
		}
		return out
	}
	return map[string]any{}
}

func nullable(s map[string]any) map[string]any {
	if _, ref := s["$ref"]; ref {
		return map[string]any{"anyOf": []any{s, map[string]any{"type": "null"}}}
	}
	if t, ok := s["type"].(string); ok {
		out := map[string]any{}
		for k, v := range s {
			out[k] = v
		}
		out["type"] = []string{t, "null"}
		return out
	}
	return s
}

// serveOpenAPI answers the document.
func (s *Server) serveOpenAPI(doc []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}
}

// notFound answers every request no route matches with the JSON error
// shape: 405 with Allow when the path exists for other methods, else 404.
func notFound(mux *http.ServeMux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", ")), "")
			return
		}
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s (the API is described at %s)", r.Method, r.URL.Path, OpenAPIPath), "")
	}
}
