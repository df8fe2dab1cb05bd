package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ivms/ams/ingest/api"
	"github.com/ivms/ams/pkg/commandkinds"
	"github.com/ivms/ams/pkg/protocol"
)

// destructive are the kinds that ask for confirmation before they are sent.
var destructive = map[string]string{
	"reboot":    "The camera restarts and is offline for a minute or two.",
	"reset":     "The camera's settings are reset (value 1: a factory reset).",
	"sd_format": "Everything on the camera's SD card is erased.",
}

// FormField is one input of the command form, built from a commandkinds.Field.
type FormField struct {
	Path     string // dotted body path, e.g. "sOsdName.strText"
	Input    string // the form input's name: "f." + Path
	ID       string // the element id
	Label    string
	Type     string // "int", "string" or "object"
	Required bool
	Options  []int64 // allowed values (a select)
	Min      string  // smallest value, when the kind has one
	MaxLen   int
	Value    string
	Error    string
	Children []FormField
	Open     bool // an object that also takes other members (the extra JSON box)
}

// formData is the data of the command form page.
type formData struct {
	SN       string
	Kinds    []commandkinds.Kind
	Kind     *commandkinds.Kind
	Fields   []FormField
	Open     bool // the body takes members beyond Fields (the extra box)
	Extra    string
	Default  string
	Warning  string // for a destructive kind
	Confirm  bool
	Timeout  string
	Offline  string
	Errors   []fieldMsg
	CanSend  bool
	ExtraErr string
	ConfErr  string
	TOErr    string
}

type fieldMsg struct {
	Field, Msg, Anchor string
}

func buildFields(spec commandkinds.Spec, prefix string, form url.Values) []FormField {
	var out []FormField
	for _, f := range spec.Fields {
		path := prefix + f.Name
		ff := FormField{Path: path, Input: "f." + path, ID: "f-" + strings.ReplaceAll(path, ".", "-"), Label: f.Name,
			Required: f.Required, MaxLen: f.MaxLen, Value: form.Get("f." + path)}
		switch f.Type {
		case commandkinds.Int:
			ff.Type = "int"
			ff.Options = f.OneOf
			if f.HasMin {
				ff.Min = strconv.FormatInt(f.Min, 10)
			}
		case commandkinds.String:
			ff.Type = "string"
		case commandkinds.Object:
			ff.Type = "object"
			if f.Spec != nil {
				ff.Children = buildFields(*f.Spec, path+".", form)
				ff.Open = f.Spec.Open
			}
		}
		out = append(out, ff)
	}
	return out
}

// bodyFromForm builds the JSON body from the form's fields (in table order)
// and the extra members box; an empty optional field is left out. It checks
// only that an integer field holds an integer: everything else is checked by
// the kind's Normalize, exactly as the API checks it.
func bodyFromForm(fields []FormField, extra map[string]json.RawMessage) ([]byte, *fieldMsg) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	n := 0
	member := func(name string, v []byte) {
		if n > 0 {
			buf.WriteByte(',')
		}
		k, _ := json.Marshal(name)
		buf.Write(k)
		buf.WriteByte(':')
		buf.Write(v)
		n++
	}
	for _, f := range fields {
		switch f.Type {
		case "int":
			if f.Value == "" {
				continue
			}
			x, err := strconv.ParseInt(strings.TrimSpace(f.Value), 10, 64)
			if err != nil {
				return nil, &fieldMsg{Field: "body." + f.Path, Msg: "body field " + f.Path + ": must be an integer"}
			}
			member(f.Label, []byte(strconv.FormatInt(x, 10)))
		case "string":
			if f.Value == "" && !f.Required {
				continue
			}
			v, _ := json.Marshal(f.Value)
			member(f.Label, v)
		case "object":
			v, fm := bodyFromForm(f.Children, nil)
			if fm != nil {
				return nil, fm
			}
			if string(v) == "{}" && !f.Required {
				continue
			}
			member(f.Label, v)
		}
	}
	for _, k := range sortedKeys(extra) {
		member(k, extra[k])
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func (s *Server) formFor(sn, kindName string, form url.Values, canSend bool) formData {
	d := formData{SN: sn, Kinds: commandkinds.All(), CanSend: canSend, Timeout: form.Get("timeout"),
		Offline: form.Get("offline"), Extra: form.Get("extra"), Confirm: form.Get("confirm") == "yes"}
	if k, ok := commandkinds.Lookup(kindName); ok {
		d.Kind = &k
		d.Fields = buildFields(k.Body, "", form)
		d.Open = k.Body.Open
		d.Default = k.Default
		d.Warning = destructive[k.Name]
	}
	return d
}

func (s *Server) commandForm(w http.ResponseWriter, r *http.Request, p principal) {
	sn := r.PathValue("sn")
	if !protocol.ValidSN(sn) {
		http.Error(w, "not a serial number", http.StatusBadRequest)
		return
	}
	d := s.formFor(sn, r.URL.Query().Get("kind"), url.Values{}, p.CanSend())
	s.render(w, r, http.StatusOK, "command_form", s.newPage(p, "Send a command to "+sn, "cameras", d))
}

// markError attaches msg to the form field at path (body.a.b), or returns false.
func markError(fields []FormField, path, msg string) bool {
	for i := range fields {
		if "body."+fields[i].Path == path {
			fields[i].Error = msg
			return true
		}
		if markError(fields[i].Children, path, msg) {
			return true
		}
	}
	return false
}

func (s *Server) sendCommand(w http.ResponseWriter, r *http.Request, p principal) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	sn := r.PathValue("sn")
	if !protocol.ValidSN(sn) {
		http.Error(w, "not a serial number", http.StatusBadRequest)
		return
	}
	if err := s.checkCSRF(r, "session:"+p.token); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if !p.CanSend() {
		s.log.Info("console: command refused: scope", "name", p.Name, "scope", p.Scope, "sn", sn)
		d := s.formFor(sn, r.PostFormValue("kind"), r.PostForm, false)
		pg := s.newPage(p, "Send a command to "+sn, "cameras", d)
		pg.Error = "Your token (" + p.Name + ", scope " + p.Scope + ") may view but not send commands."
		s.render(w, r, http.StatusForbidden, "command_form", pg)
		return
	}
	d := s.formFor(sn, r.PostFormValue("kind"), r.PostForm, true)
	refuse := func(field, msg string) {
		d.Errors = append(d.Errors, fieldMsg{Field: field, Msg: msg, Anchor: anchor(field)})
		switch field {
		case "extra", "body":
			d.ExtraErr = msg
		case "confirm":
			d.ConfErr = msg
		case "timeout", "offline":
			d.TOErr = msg
		default:
			if !markError(d.Fields, field, msg) {
				d.ExtraErr = msg
			}
		}
		pg := s.newPage(p, "Send a command to "+sn, "cameras", d)
		pg.Error = "The command was not sent: " + field + ": " + msg
		s.render(w, r, http.StatusBadRequest, "command_form", pg)
	}
	if d.Kind == nil {
		refuse("kind", "choose a command kind")
		return
	}
	var extra map[string]json.RawMessage
	if strings.TrimSpace(d.Extra) != "" {
		if !d.Open {
			refuse("extra", "this command takes no other members")
			return
		}
		if err := json.Unmarshal([]byte(d.Extra), &extra); err != nil {
			refuse("extra", "other members must be a JSON object: "+err.Error())
			return
		}
	}
	body, fm := bodyFromForm(d.Fields, extra)
	if fm != nil {
		refuse(fm.Field, fm.Msg)
		return
	}
	if string(body) == "{}" && d.Default != "" {
		body = nil // the kind's default body
	}
	if _, err := d.Kind.Normalize(body); err != nil {
		var be *commandkinds.BodyError
		if errors.As(err, &be) && be.Field != "" {
			refuse("body."+be.Field, be.Reason)
		} else if errors.As(err, &be) {
			refuse("body", be.Reason)
		} else {
			refuse("body", err.Error())
		}
		return
	}
	if d.Warning != "" && !d.Confirm {
		refuse("confirm", "tick the box to confirm "+d.Kind.Name)
		return
	}
	id, err := randomHex()
	if err != nil {
		s.internal(w, r, err)
		return
	}
	cmd, err := api.BuildCommand(api.CommandRequest{Kind: d.Kind.Name, Body: body, Timeout: d.Timeout, Offline: d.Offline},
		sn, id, p.Name, s.cfg.Now())
	if err != nil {
		field := "body"
		switch {
		case strings.Contains(err.Error(), "timeout"):
			field = "timeout"
		case strings.Contains(err.Error(), "offline"):
			field = "offline"
		}
		refuse(field, err.Error())
		return
	}
	registered, err := s.store.Registered(r.Context(), sn)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if !registered {
		refuse("sn", fmt.Sprintf("camera %s is not registered", sn))
		return
	}
	value, err := s.enc.Encode(cmd)
	if err != nil {
		s.internal(w, r, err)
		return
	}
	if err := s.prod.ProduceSync(r.Context(), s.cfg.Names.Commands, []byte(sn), value); err != nil {
		s.internal(w, r, fmt.Errorf("console: write command %s: %w", id, err))
		return
	}
	s.log.Info("console: command sent", "id", id, "sn", sn, "kind", cmd.Kind, "requested_by", p.Name)
	http.Redirect(w, r, "/ui/commands/"+id, http.StatusSeeOther)
}

func anchor(field string) string {
	switch field {
	case "extra", "body":
		return "extra"
	case "confirm":
		return "confirm"
	case "timeout":
		return "timeout"
	case "kind":
		return "kind"
	}
	return "f-" + strings.ReplaceAll(strings.TrimPrefix(field, "body."), ".", "-")
}

func randomHex() (string, error) {
	s, err := randomString()
	if err != nil {
		return "", err
	}
	// base64url of 24 random bytes: 32 characters of [A-Za-z0-9_-], a valid command id.
	return s, nil
}
