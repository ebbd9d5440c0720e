package main

// summary is the effective configuration as log attributes, for the
// startup line "configuration": every top-level key with a value,
// defaults included (config check prints the same keys, and each
// listener and bridge in full), then the listeners by name. Values are
// paths, addresses, sizes and switches: no secret is a top-level key
// (admin_token_file and password_file name files).
func (c *config) summary() []any {
	var attrs []any
	for _, k := range configKeys {
		if v := k.get(c); v != "" {
			attrs = append(attrs, k.name, v)
		}
	}
	var names []string
	for _, l := range c.listeners() {
		names = append(names, l.Name+"="+l.Listen)
	}
	return append(attrs, "listeners", names)
}
