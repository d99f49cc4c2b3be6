package store

// ForgetWrites drops what p remembers of its own writes (the state of a
// process that just took over), for benchmarks.
func (p *Patients) ForgetWrites() {
	p.mu.Lock()
	clear(p.revs)
	p.mu.Unlock()
}
