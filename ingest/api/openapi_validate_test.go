package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/helpers"
)

// ValidatingHandler serves h and checks every request and answer against
// the OpenAPI document doc with libopenapi-validator:
//   - every answer must match the document (status, content type, body schema);
//   - a request the document refuses must be refused by the server (4xx);
//   - an unknown route must get the JSON error shape.
//
// It is used by the unit tests' harness and by the integration tests, so the
// document is checked against real requests and responses of both.
func ValidatingHandler(t testing.TB, h http.Handler, doc map[string]any) http.Handler {
	t.Helper()
	v := newValidator(t, doc)
	var mu sync.Mutex // the validator is shared; keep its use simple
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		vreq := r.Clone(r.Context())
		vreq.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		resp := rec.Result()
		resp.Request = vreq

		mu.Lock()
		reqOK, reqErrs := v.ValidateHttpRequest(vreq)
		vreq.Body = io.NopCloser(bytes.NewReader(body))
		unknownPath := false
		for _, e := range reqErrs {
			unknownPath = unknownPath || e.ValidationType == helpers.PathValidation
		}
		var respOK bool
		var respErrs []*verrors.ValidationError
		if !unknownPath {
			respOK, respErrs = v.ValidateHttpResponse(vreq, resp)
		}
		mu.Unlock()

		where := fmt.Sprintf("%s %s -> %d %s", r.Method, r.URL.RequestURI(), rec.Code, strings.TrimSpace(rec.Body.String()))
		switch {
		case unknownPath:
			var e apiError
			if rec.Code < 400 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Error == "" {
				t.Errorf("openapi: a route outside the document answered without the JSON error shape: %s", where)
			}
		case !respOK:
			t.Errorf("openapi: the answer does not match the document: %s\n%s", where, describe(respErrs))
		}
		if !reqOK && !unknownPath && rec.Code < 400 {
			t.Errorf("openapi: the document refuses a request the server accepted: %s\n%s", where, describe(reqErrs))
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	})
}

func newValidator(t testing.TB, doc map[string]any) validator.Validator {
	t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := libopenapi.NewDocument(b)
	if err != nil {
		t.Fatalf("openapi document: %v", err)
	}
	v, errs := validator.NewValidator(d)
	if len(errs) > 0 {
		t.Fatalf("openapi validator: %v", errs)
	}
	if ok, errs := v.ValidateDocument(); !ok {
		t.Fatalf("the OpenAPI document is not valid OpenAPI 3.1:\n%s", describe(errs))
	}
	return v
}

func describe(errs []*verrors.ValidationError) string {
	var sb strings.Builder
	for _, e := range errs {
		fmt.Fprintf(&sb, "  - %s: %s\n", e.Message, e.Reason)
		for _, s := range e.SchemaValidationErrors {
			fmt.Fprintf(&sb, "      %s\n", s.Error())
		}
	}
	return sb.String()
}
