// Package mgmtclient is a small client of RabbitMQ's management HTTP API
// (rabbitmq_management), which the embedded broker serves too. `oslogo ctl`
// is built on it.
//
// Errors never hold the password: the URL in them is url.URL.Redacted().
package mgmtclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultURL is where rabbitmqadmin and the management plugin listen by
// default.
const DefaultURL = "http://localhost:15672"

// Config says which API to talk to and as whom.
type Config struct {
	// URL is the API's base URL, e.g. http://localhost:15672 (a path prefix
	// is kept; user information in it is used when User is empty).
	URL string
	// User and Password are sent with HTTP basic authentication.
	User     string
	Password string
	// Timeout bounds each request; 0 means 60 s (rabbitmqctl's default).
	Timeout time.Duration
	// HTTPClient is used when set (tests); its Timeout is left alone.
	HTTPClient *http.Client
}

// Client calls the API. It is safe for concurrent use.
type Client struct {
	base     *url.URL
	user     string
	password string
	timeout  time.Duration
	hc       *http.Client
}

// ErrUnreachable wraps failures to reach the API at all (refused, DNS,
// TLS, a dropped connection): nothing was answered.
var ErrUnreachable = errors.New("management API unreachable")

// APIError is an HTTP answer other than 2xx, with RabbitMQ's error body.
type APIError struct {
	Method string
	URL    string // redacted
	Status int
	Err    string // the body's "error"
	Reason string // the body's "reason"
}

func (e *APIError) Error() string {
	msg := e.Reason
	if msg == "" {
		msg = e.Err
	}
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.Status, msg)
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Status == http.StatusNotFound
}

// New validates cfg; it does no I/O.
func New(cfg Config) (*Client, error) {
	raw := cfg.URL
	if raw == "" {
		raw = DefaultURL
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("management URL: %v", redactErr(err, raw))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("management URL %s: the scheme must be http or https", u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("management URL %s: no host", u.Redacted())
	}
	c := &Client{user: cfg.User, password: cfg.Password, timeout: cfg.Timeout, hc: cfg.HTTPClient}
	if u.User != nil {
		if c.user == "" {
			c.user = u.User.Username()
			c.password, _ = u.User.Password()
		}
		u.User = nil
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	c.base = u
	if c.timeout <= 0 {
		c.timeout = 60 * time.Second
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	return c, nil
}

// redactErr drops a *url.Error's URL (which may hold a password).
func redactErr(err error, raw string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return errors.New(strings.ReplaceAll(err.Error(), raw, "<url>"))
}

// CloseIdleConnections closes the connections kept for the next request.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// URL is the base URL without user information.
func (c *Client) URL() string { return c.base.String() }

// Path joins segments into an API path, escaping each one, so that the
// vhost "/" is written %2F: Path("queues", "/", "q") is /api/queues/%2F/q.
func Path(segs ...string) string {
	var b strings.Builder
	b.WriteString("/api")
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// Request is one call.
type Request struct {
	Method string
	Path   string     // escaped, from Path
	Query  url.Values // optional
	Body   any        // encoded as JSON unless it is []byte
	Header http.Header
}

// Do sends r and decodes a JSON answer into out (when out is not nil).
func (c *Client) Do(ctx context.Context, r Request, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *c.base
	u.RawPath = c.base.EscapedPath() + r.Path
	u.Path, _ = url.PathUnescape(u.RawPath)
	if r.Query != nil {
		u.RawQuery = r.Query.Encode()
	}
	shown := u.Redacted()
	var body io.Reader
	if r.Body != nil {
		b, ok := r.Body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(r.Body); err != nil {
				return err
			}
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %v", r.Method, shown, redactErr(err, u.String()))
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		err = redactErr(err, u.String())
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s %s: no answer in %v: %w", r.Method, shown, c.timeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("%s %s: %w: %v", r.Method, shown, ErrUnreachable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("%s %s: no answer in %v: %w", r.Method, shown, c.timeout, context.DeadlineExceeded)
		}
		return fmt.Errorf("%s %s: reading the answer: %w: %v", r.Method, shown, ErrUnreachable, redactErr(err, u.String()))
	}
	if resp.StatusCode/100 != 2 {
		ae := &APIError{Method: r.Method, URL: shown, Status: resp.StatusCode}
		var eb struct {
			Error  string `json:"error"`
			Reason any    `json:"reason"`
		}
		if json.Unmarshal(data, &eb) == nil {
			ae.Err = eb.Error
			switch v := eb.Reason.(type) {
			case string:
				ae.Reason = v
			case nil:
			default:
				b, _ := json.Marshal(v)
				ae.Reason = string(b)
			}
		}
		return ae
	}
	if out == nil || len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], data...)
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %v", r.Method, shown, err)
	}
	return nil
}

// Get is Do with GET.
func (c *Client) Get(ctx context.Context, path string, out any) error {
	return c.Do(ctx, Request{Method: http.MethodGet, Path: path}, out)
}

// Put is Do with PUT and a JSON body.
func (c *Client) Put(ctx context.Context, path string, body any) error {
	return c.Do(ctx, Request{Method: http.MethodPut, Path: path, Body: body}, nil)
}

// Delete is Do with DELETE.
func (c *Client) Delete(ctx context.Context, path string) error {
	return c.Do(ctx, Request{Method: http.MethodDelete, Path: path}, nil)
}
