package fanout

// EntryFromWire is entryFromWire, for the benchmark in the external test
// package.
var EntryFromWire = entryFromWire
