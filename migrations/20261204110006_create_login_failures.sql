-- Failed sign-in attempts, for rate limiting per account and per client address.
--
-- `key` is 'account:' followed by the e-mail key of user_logins (so unknown addresses are
-- limited exactly like known ones and the limit reveals nothing), or 'address:' followed by
-- the client's IPv4 address or IPv6 /64 network. Rows older than the limit's window are
-- deleted whenever a new failure is recorded.
CREATE TABLE login_failures (
    id        bigint      GENERATED ALWAYS AS IDENTITY,
    key       text        NOT NULL,
    failed_at timestamptz NOT NULL,
    CONSTRAINT login_failures_pkey PRIMARY KEY (id)
);
CREATE INDEX login_failures_by_key ON login_failures (key, failed_at);
CREATE INDEX login_failures_by_time ON login_failures (failed_at);
