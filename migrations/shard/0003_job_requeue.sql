-- How many times a job was re-queued by hand. A job message carries the number it was
-- published with, so a retry's message is told apart from the original's.
alter table job add column requeue int not null default 0;
-- The attempts made before the last re-queue: a retried job gets its full number of tries
-- again, while `attempts` keeps counting them all.
alter table job add column retry_from int not null default 0;
