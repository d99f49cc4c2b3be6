package api

import (
	"context"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"radbridge/auth"
	"radbridge/eventlog"
	rbv1 "radbridge/proto/radbridge/v1"
)

// Limits on requests.
const (
	maxFilterValues = 100
	maxIDLen        = 256
	maxPageSize     = 1000
	defaultPageSize = 100
)

// ResourceTypes are the FHIR resource types events carry.
var ResourceTypes = []string{"ImagingStudy", "DiagnosticReport", "ServiceRequest", "AuditEvent"}

// clientTypes may be published by clients.
var clientTypes = map[rbv1.EventType]bool{rbv1.EventType_IMAGING_STUDY_VIEWED: true}

func invalid(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

func filter(patients []string, types []rbv1.EventType, resources []string, priorities []rbv1.Priority) (eventlog.Filter, error) {
	if len(patients) > maxFilterValues || len(types) > maxFilterValues || len(resources) > maxFilterValues || len(priorities) > maxFilterValues {
		return eventlog.Filter{}, invalid("at most %d values per filter", maxFilterValues)
	}
	for _, p := range patients {
		if err := checkID("patient_id", p); err != nil {
			return eventlog.Filter{}, err
		}
	}
	for _, t := range types {
		if _, ok := rbv1.EventType_name[int32(t)]; !ok || t == rbv1.EventType_EVENT_TYPE_UNSPECIFIED {
			return eventlog.Filter{}, invalid("unknown event type %v", t)
		}
	}
	for _, r := range resources {
		ok := false
		for _, k := range ResourceTypes {
			ok = ok || r == k
		}
		if !ok {
			return eventlog.Filter{}, invalid("unknown resource_type %q (want one of %s)", r, strings.Join(ResourceTypes, ", "))
		}
	}
	for _, p := range priorities {
		if _, ok := rbv1.Priority_name[int32(p)]; !ok || p == rbv1.Priority_PRIORITY_UNSPECIFIED {
			return eventlog.Filter{}, invalid("unknown priority %v", p)
		}
	}
	return eventlog.Filter{PatientIDs: patients, Types: types, ResourceTypes: resources, Priorities: priorities}, nil
}

func checkID(field, v string) error {
	if v == "" {
		return invalid("%s is empty", field)
	}
	if len(v) > maxIDLen {
		return invalid("%s longer than %d bytes", field, maxIDLen)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return invalid("%s contains a control or invalid character", field)
		}
	}
	return nil
}

func checkUID(field, v string) error {
	if v == "" {
		return invalid("%s is empty", field)
	}
	if len(v) > 64 {
		return invalid("%s longer than 64 characters", field)
	}
	for _, c := range v {
		if (c < '0' || c > '9') && c != '.' {
			return invalid("%s is not a DICOM UID (digits and dots)", field)
		}
	}
	return nil
}

// checkCursor rejects a cursor beyond the log's end or before its retained
// history (0, the start of the log, is never before it).
func (s *Service) checkCursor(ctx context.Context, field string, since uint64) error {
	if s.hub != nil && s.hub.Covers(since) {
		return nil // within the in-memory window: no store round trip
	}
	first, last, err := s.events.Bounds(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "event log: %v", err)
	}
	if since > last {
		return status.Errorf(codes.OutOfRange, "%s %d is beyond the newest event %d", field, since, last)
	}
	// 0 is no resume: it asks for the log from its start, which is the
	// first retained event (a new client after retention removed events
	// got OUT_OF_RANGE for good).
	if since > 0 && first > 1 && since+1 < first {
		return status.Errorf(codes.OutOfRange, "%s %d: events before %d are no longer retained", field, since, first)
	}
	return nil
}

func sizeCheck(field, v string) error {
	if len(v) > maxIDLen {
		return invalid("%s longer than %d bytes", field, maxIDLen)
	}
	return nil
}

func pageSize(n uint32) (int, error) {
	switch {
	case n == 0:
		return defaultPageSize, nil
	case n > maxPageSize:
		return 0, invalid("page_size %d is more than %d", n, maxPageSize)
	}
	return int(n), nil
}

// scopePatients applies the caller's patient restriction to a patient
// filter: a restricted principal that names no patient gets its own
// patients; naming one it may not see is PermissionDenied.
func scopePatients(ctx context.Context, requested []string) ([]string, error) {
	p := auth.FromContext(ctx)
	if !p.Restricted() {
		return requested, nil
	}
	if len(requested) == 0 {
		if len(p.Patients) == 0 {
			return nil, status.Errorf(codes.PermissionDenied, "%s may see no patient", p.Subject)
		}
		return append([]string{}, p.Patients...), nil
	}
	for _, id := range requested {
		if err := mayRead(ctx, id); err != nil {
			return nil, err
		}
	}
	return requested, nil
}

// mayRead is PermissionDenied unless the caller may see patientID. A call
// without a principal (no authentication configured) may.
func mayRead(ctx context.Context, patientID string) error {
	if p := auth.FromContext(ctx); p.Restricted() && !p.MayRead(patientID) {
		return status.Errorf(codes.PermissionDenied, "%s may not see patient %q", p.Subject, patientID)
	}
	return nil
}

// PriorityByName accepts PRIORITY_CRITICAL or critical (routine, stat,
// critical).
func PriorityByName(s string) (rbv1.Priority, bool) {
	if v, ok := rbv1.Priority_value[s]; ok && v != 0 {
		return rbv1.Priority(v), true
	}
	if v, ok := rbv1.Priority_value["PRIORITY_"+strings.ToUpper(s)]; ok && v != 0 && strings.ToLower(s) == s {
		return rbv1.Priority(v), true
	}
	return 0, false
}
