-- Delivery watch. `redelivered_at` records when the watchdog pushed a long-due job to the queue
-- again, so each due time is re-pushed once however many workers sweep. A worker's `consumers`
-- is what it last reported of each kind's consumer (alive, last fetch, restarts), a JSON array.
ALTER TABLE jobs ADD COLUMN redelivered_at INTEGER;
ALTER TABLE workers ADD COLUMN consumers TEXT NOT NULL DEFAULT '[]';
