"""The records' first schema: requests, their feedback, review items and reviewers' corrections.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("model_version", sa.String(), nullable=False),
        sa.Column("route", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("input_text", sa.Text(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("head", sa.String(), nullable=True),
        sa.Column("experiment", sa.String(), nullable=True),
        sa.Column("variant", sa.String(), nullable=True),
        sa.Column("user_id", sa.String(), nullable=True),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name="pk_requests"),
    )
    op.create_index("ix_requests_created_at", "requests", ["created_at"])
    op.create_index("ix_requests_experiment", "requests", ["experiment"])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("rating", sa.Double(), nullable=True),
        sa.Column("label", sa.String(), nullable=True),
        sa.Column("spans", sa.JSON(), nullable=True),
        sa.Column("author", sa.String(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_feedback_request_id_requests",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_feedback"),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    _create_review_tables()


def _create_review_tables() -> None:
    op.create_table(
        "review_items",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("prediction", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("priority", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("request_id", sa.String(), nullable=True),
        sa.Column("model_version", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["request_id"], ["requests.id"], name="fk_review_items_request_id_requests",
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_review_items"),
        sa.UniqueConstraint("queue", "task", "text_sha256", name="uq_review_items_queue_task_text_sha256"),
    )
    op.create_index("ix_review_items_queue_status_priority", "review_items", ["queue", "status", "priority"])
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("author", sa.String(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("label", sa.String(), nullable=True),
        sa.Column("spans", sa.JSON(), nullable=True),
        sa.Column("edits", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Double(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(["item_id"], ["review_items.id"], name="fk_corrections_item_id_review_items",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_corrections"),
        sa.UniqueConstraint("item_id", name="uq_corrections_item_id"),
    )


def downgrade() -> None:
    op.drop_table("corrections")
    op.drop_index("ix_review_items_queue_status_priority", table_name="review_items")
    op.drop_table("review_items")
    op.drop_index("ix_feedback_request_id", table_name="feedback")
    op.drop_table("feedback")
    op.drop_index("ix_requests_experiment", table_name="requests")
    op.drop_index("ix_requests_created_at", table_name="requests")
    op.drop_table("requests")
