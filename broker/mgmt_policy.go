package broker

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// HTTP handlers for policies (/api/policies...), over the typed methods
// in policy.go. Access as RabbitMQ 3.10.8 answered (measured on a node with
// the management plugin): lists show the policies of the vhosts the user
// has permissions in (administrators: all); reading one policy or writing
// needs the policymaker or administrator tag and permissions in the vhost,
// else 401 "User not authorised to access object".

func (a *mgmtAPI) registerPolicyRoutes(h func(pattern string, need tagLevel, f func(*mgmtRequest))) {
	h("GET /api/policies", levelManagement, a.policies)
	h("GET /api/policies/{vhost}", levelManagement, a.policies)
	h("GET /api/policies/{vhost}/{name}", levelManagement, a.policy)
	h("PUT /api/policies/{vhost}/{name}", levelManagement, a.putPolicy)
	h("DELETE /api/policies/{vhost}/{name}", levelManagement, a.deletePolicy)
}

// mayMakePolicies: RabbitMQ's policymaker tag, or administrator.
func (m *mgmtRequest) mayMakePolicies() bool {
	return m.level >= levelAdministrator || slices.Contains(m.user.tags, "policymaker")
}

func (a *mgmtAPI) policies(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	list, err := a.s.Policies(vh)
	if err != nil {
		writeNotFound(m.w)
		return
	}
	list = slices.DeleteFunc(list, func(p Policy) bool {
		return m.level < levelAdministrator && !m.user.vhostAllowed(p.VHost)
	})
	m.writeList(list)
}

// policyAccess checks the vhost and the policymaker right for one policy.
func (a *mgmtAPI) policyAccess(m *mgmtRequest) (string, bool) {
	vh := m.r.PathValue("vhost")
	if a.s.vhost(vh) == nil {
		if m.r.Method == http.MethodPut {
			writeError(m.w, http.StatusNotFound, "not_found", "vhost_not_found")
		} else {
			writeNotFound(m.w)
		}
		return "", false
	}
	if !m.mayMakePolicies() || !m.user.vhostAllowed(vh) {
		writeError(m.w, http.StatusUnauthorized, "not_authorised", "User not authorised to access object")
		return "", false
	}
	return vh, true
}

func (a *mgmtAPI) policy(m *mgmtRequest) {
	vh, ok := a.policyAccess(m)
	if !ok {
		return
	}
	list, _ := a.s.Policies(vh)
	for _, p := range list {
		if p.Name == m.r.PathValue("name") {
			writeJSON(m.w, http.StatusOK, p)
			return
		}
	}
	writeNotFound(m.w)
}

type policyBody struct {
	Pattern    *string          `json:"pattern"`
	Definition *json.RawMessage `json:"definition"`
	ApplyTo    string           `json:"apply-to"`
	Priority   any              `json:"priority"`
}

func (a *mgmtAPI) putPolicy(m *mgmtRequest) {
	vh, ok := a.policyAccess(m)
	if !ok {
		return
	}
	var b policyBody
	if !m.readBody(a.s, &b) {
		return
	}
	switch {
	case b.Pattern == nil:
		writeError(m.w, http.StatusBadRequest, "bad_request", "[{key_missing,pattern}]")
		return
	case b.Definition == nil:
		writeError(m.w, http.StatusBadRequest, "bad_request", "[{key_missing,definition}]")
		return
	}
	p := Policy{VHost: vh, Name: m.r.PathValue("name"), Pattern: *b.Pattern, ApplyTo: b.ApplyTo}
	if b.Priority != nil {
		n, isInt := jsonInt(b.Priority)
		if !isInt {
			policyValidationError(m.w, "priority should be a number, actually was "+erlTerm(b.Priority))
			return
		}
		p.Priority = int(n)
	}
	dec := json.NewDecoder(strings.NewReader(string(*b.Definition)))
	dec.UseNumber()
	var def any
	if err := dec.Decode(&def); err != nil {
		writeError(m.w, http.StatusBadRequest, "bad_request", "not_json")
		return
	}
	obj, isObj := def.(map[string]any)
	if !isObj {
		policyValidationError(m.w, "definition must be a dictionary: "+erlTerm(def))
		return
	}
	p.Definition = obj
	created, err := a.s.SetPolicy(p)
	var pe *PolicyError
	switch {
	case errors.As(err, &pe):
		policyValidationError(m.w, pe.Reason)
	case errors.Is(err, ErrNotFound):
		writeError(m.w, http.StatusNotFound, "not_found", "vhost_not_found")
	case err != nil:
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
	case created:
		m.w.WriteHeader(http.StatusCreated)
	default:
		m.w.WriteHeader(http.StatusNoContent)
	}
}

// policyValidationError answers RabbitMQ's 400 for a refused policy; like
// RabbitMQ it escapes the reason for HTML.
func policyValidationError(w http.ResponseWriter, reason string) {
	writeError(w, http.StatusBadRequest, "bad_request", "Validation failed\n\n"+htmlEscape(reason)+"\n")
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func (a *mgmtAPI) deletePolicy(m *mgmtRequest) {
	vh, ok := a.policyAccess(m)
	if !ok {
		return
	}
	switch err := a.s.ClearPolicy(vh, m.r.PathValue("name")); {
	case errors.Is(err, ErrNotFound):
		writeNotFound(m.w)
	case err != nil:
		writeError(m.w, http.StatusInternalServerError, "internal_server_error", err.Error())
	default:
		m.w.WriteHeader(http.StatusNoContent)
	}
}

// writeAdminError answers a failed administration change: 404 for a
// missing object, 500 when the change could not be saved.
func writeAdminError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrNotFound) {
		writeNotFound(w)
		return
	}
	writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
}
