"""Alert rules remember where the log stood when they were created or replaced: a rule sees
the entries appended after that, whatever minutes they carry, and never the history before.
Rules created before this migration have none (they see what the evaluator reads next)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "g0006"
down_revision = "g0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add alert_rules.from_idx."""
    op.add_column("alert_rules", sa.Column("from_idx", sa.BigInteger))


def downgrade() -> None:
    """Drop alert_rules.from_idx."""
    with op.batch_alter_table("alert_rules") as batch:
        batch.drop_column("from_idx")
