-- The catalog database is POSTGRES_DB; one shard database per region.
create database switchyard_shard_us_east_1;
create database switchyard_shard_eu_west_1;
