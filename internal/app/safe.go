package app

import (
	"radbridge/auth"
	"radbridge/internal/config"
)

// maxWSTickets bounds the outstanding /ws tickets (about 200 bytes each).
const maxWSTickets = 100000

// wsTickets is the ticket office of --ws-tickets, nil when off.
func wsTickets(cfg *config.Config) *auth.Tickets {
	if !cfg.WSTickets {
		return nil
	}
	return auth.NewTickets(cfg.WSTicketTTL, maxWSTickets)
}
