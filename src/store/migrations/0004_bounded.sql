-- Memory bounded by what is open: the daemon reads the used links of the
-- incidents it holds, not the whole table, and the notifier asks whether
-- an incident is over without reading its timeline.
CREATE INDEX used_links_incident ON used_links (incident);
