package messaging

import "context"

// RequestContext is oslo's request context (the ctxt dict: user, project,
// request_id, roles, ...). It travels with every request and notification as
// flattened _context_* keys. Values must be JSON-encodable.
type RequestContext map[string]any

type requestContextKey struct{}

// WithRequestContext returns ctx carrying rc, which calls, casts and
// notifications made with it send along.
func WithRequestContext(ctx context.Context, rc RequestContext) context.Context {
	return context.WithValue(ctx, requestContextKey{}, rc)
}

// RequestContextFrom returns the request context carried by ctx: in a
// handler, the caller's context (with oslo's client_timeout key added); nil
// if none.
func RequestContextFrom(ctx context.Context) RequestContext {
	rc, _ := ctx.Value(requestContextKey{}).(RequestContext)
	return rc
}
