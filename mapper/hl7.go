package mapper

// hl7Rules maps HL7 observations.
func hl7Rules(o Options) map[string]Rule { return nil }

// OrderState is what the mapper knows of one order.
type OrderState struct{}
