"""All SQL, one module per aggregate. Handlers never see asyncpg records: each module returns model types."""
