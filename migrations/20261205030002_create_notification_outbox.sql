-- The notification outbox: one row per message to send, written by the
-- notification_outbox projection in the same transaction as its checkpoint, and sent
-- by the dispatcher at least once.
--
-- Rows name their recipient by id only. The dispatcher opens the address and name at
-- send time, so an erased person's messages fail to resolve and no outbox scrub is
-- needed, and an SMS opt-out takes effect for messages already queued.
CREATE SCHEMA notifications;

CREATE TABLE notifications.outbox (
    id              bigserial   NOT NULL,
    -- The event id and channel: a replayed event inserts nothing new.
    dedupe_key      text        NOT NULL,
    agency_id       uuid        NOT NULL,
    channel         text        NOT NULL,
    recipient_kind  text        NOT NULL,
    recipient_id    uuid        NOT NULL,
    template        text        NOT NULL,
    referral_id     uuid,
    payout_id       uuid,
    -- Template values without personal data, such as a status name or an amount.
    params          jsonb       NOT NULL DEFAULT '{}',
    status          text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- Provider status or error of the last failed attempt, or why the message was
    -- skipped; never an address or a name.
    last_error      text,
    created_at      timestamptz NOT NULL,
    sent_at         timestamptz,
    CONSTRAINT outbox_pkey PRIMARY KEY (id),
    CONSTRAINT outbox_dedupe_key UNIQUE (dedupe_key),
    CONSTRAINT outbox_channel CHECK (channel IN ('email', 'sms')),
    CONSTRAINT outbox_recipient_kind CHECK (recipient_kind IN ('ambassador', 'user')),
    CONSTRAINT outbox_status CHECK (status IN ('pending', 'sent', 'skipped', 'dead_lettered'))
);
-- The dispatcher claims due pending rows in due order.
CREATE INDEX outbox_pending_due
    ON notifications.outbox (next_attempt_at, id) WHERE status = 'pending';
