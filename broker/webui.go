package broker

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

// The web UI: plain HTML, CSS and JavaScript embedded in the binary and
// served at "/" of the management listener, beside the API under /api/.
// The page logs in with HTTP basic authentication like RabbitMQ's UI (the
// credentials are kept in sessionStorage and sent as an Authorization
// header to the API); the files themselves need no login. Nothing is
// loaded from elsewhere: the Content-Security-Policy allows only this
// origin.

//go:embed webui
var webuiFiles embed.FS

// webuiCSP keeps every request of the page on this origin.
const webuiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// withUI serves the UI's files for paths outside /api/ and hands the rest
// to api.
func withUI(api http.Handler) http.Handler {
	sub, err := fs.Sub(webuiFiles, "webui")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api" || strings.HasPrefix(r.URL.Path, "/api/") {
			api.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Method Not Allowed")
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", webuiCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// fromWebUI reports a request of the web UI's scripts, which send
// X-Requested-With: XMLHttpRequest. A wrong password gets no
// WWW-Authenticate challenge then, so that the browser shows the page's
// own login error rather than its password dialog (headless Chromium
// leaves such a request hanging).
func fromWebUI(r *http.Request) bool {
	return r.Header.Get("X-Requested-With") == "XMLHttpRequest"
}
