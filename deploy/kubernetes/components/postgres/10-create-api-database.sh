# compose's create-api-database config, unchanged.
# shellcheck shell=bash
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set api_db="$API_DB_NAME" --set api_user="$API_DB_USER" --set api_password="$API_DB_PASSWORD" <<'EOSQL'
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', :'api_user', :'api_password')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'api_user') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'api_db', :'api_user') \gexec
EOSQL
