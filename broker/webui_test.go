package broker

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestWebUIFiles checks that the UI is served at / of the management
// handler with a Content-Security-Policy that keeps the page on its
// origin, that its files name no other origin, and that the API still
// answers beside it.
func TestWebUIFiles(t *testing.T) {
	s, _, _ := startMgmt(t)
	h := s.ManagementHandler()
	get := func(path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = "127.0.0.1:40000"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	for path, ctype := range map[string]string{"/": "text/html", "/app.js": "text/javascript", "/style.css": "text/css"} {
		rec := get(path)
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), ctype) {
			t.Fatalf("GET %s: %d %q", path, rec.Code, rec.Header().Get("Content-Type"))
		}
		csp := rec.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Fatalf("GET %s: Content-Security-Policy %q", path, csp)
		}
	}
	if rec := get("/"); !strings.Contains(rec.Body.String(), `<script src="app.js">`) {
		t.Fatalf("index: %s", rec.Body.String())
	}
	if rec := get("/nosuch.js"); rec.Code != http.StatusNotFound {
		t.Fatalf("GET /nosuch.js: %d", rec.Code)
	}
	// The API keeps its own answers: JSON 404s, 401 without a login.
	if rec := get("/api/nosuch"); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "Object Not Found") {
		t.Fatalf("GET /api/nosuch: %d %s", rec.Code, rec.Body.String())
	}
	if rec := get("/api/overview"); rec.Code != http.StatusUnauthorized {
		t.Fatalf("GET /api/overview without credentials: %d", rec.Code)
	}
	// No file names another origin (no CDN, no web font).
	foreign := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|url\(`)
	err := fs.WalkDir(webuiFiles, "webui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		f, err := webuiFiles.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(f)
		if err != nil {
			return err
		}
		if m := foreign.Find(b); m != nil {
			t.Errorf("%s refers to %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWebUILoginNoChallenge: requests of the UI's scripts (with
// X-Requested-With: XMLHttpRequest) get 401 without a WWW-Authenticate
// challenge, so that the browser shows no password dialog; other clients
// still get RabbitMQ's challenge.
func TestWebUILoginNoChallenge(t *testing.T) {
	s, _, _ := startMgmt(t)
	h := s.ManagementHandler()
	for _, tc := range []struct {
		xhr, creds bool
		challenge  bool
	}{{false, false, true}, {false, true, true}, {true, false, false}, {true, true, false}} {
		req := httptest.NewRequest("GET", "/api/whoami", nil)
		req.RemoteAddr = "127.0.0.1:40000"
		if tc.creds {
			req.SetBasicAuth("guest", "wrong")
		}
		if tc.xhr {
			req.Header.Set("X-Requested-With", "XMLHttpRequest")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || (rec.Header().Get("WWW-Authenticate") != "") != tc.challenge {
			t.Errorf("%+v: %d WWW-Authenticate %q", tc, rec.Code, rec.Header().Get("WWW-Authenticate"))
		}
	}
}
