package broker

import (
	"errors"
	"net/http"
)

// HTTP handlers for definitions export and import (administrator only, as
// in RabbitMQ 3.10.8: other users get 401 "Not administrator user").

func (a *mgmtAPI) registerDefinitionRoutes(h func(pattern string, need tagLevel, f func(*mgmtRequest))) {
	h("GET /api/definitions", levelAdministrator, a.exportDefinitions)
	h("POST /api/definitions", levelAdministrator, a.importDefinitions)
	h("GET /api/definitions/{vhost}", levelAdministrator, a.exportVHostDefinitions)
	h("POST /api/definitions/{vhost}", levelAdministrator, a.importVHostDefinitions)
}

func (a *mgmtAPI) exportDefinitions(m *mgmtRequest) {
	writeJSON(m.w, http.StatusOK, a.s.ExportDefinitions())
}

func (a *mgmtAPI) exportVHostDefinitions(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	d, err := a.s.ExportVHostDefinitions(vh)
	if err != nil {
		writeNotFound(m.w)
		return
	}
	writeJSON(m.w, http.StatusOK, d)
}

// readDefinitions decodes a definitions body; RabbitMQ answers
// "failed_to_parse_json" for one that is not JSON.
func (m *mgmtRequest) readDefinitions(s *Server, into any) bool {
	return m.decodeJSON(int64(s.opts.MaxMessageSize)*2+64<<20, "failed_to_parse_json", into)
}

func (a *mgmtAPI) importDefinitions(m *mgmtRequest) {
	var d Definitions
	if !m.readDefinitions(a.s, &d) {
		return
	}
	writeImportResult(m.w, a.s.ImportDefinitions(d))
}

func (a *mgmtAPI) importVHostDefinitions(m *mgmtRequest) {
	vh, ok := m.vhostParam(a.s)
	if !ok {
		return
	}
	var d VHostDefinitions
	if !m.readDefinitions(a.s, &d) {
		return
	}
	writeImportResult(m.w, a.s.ImportVHostDefinitions(vh, d))
}

func writeImportResult(w http.ResponseWriter, err error) {
	var de *DefinitionsError
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.As(err, &de):
		writeError(w, http.StatusBadRequest, "bad_request", de.Reason)
	case errors.Is(err, ErrNotFound):
		writeNotFound(w)
	default:
		writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
	}
}
