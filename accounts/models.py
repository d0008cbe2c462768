"""Which customer a user acts for. Staff users need no account."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class CustomerAccount(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="customer"
    )
    customer_id = models.CharField(max_length=100, db_index=True)

    class Meta:
        db_table = "accounts_customer_account"

    def __str__(self) -> str:
        return f"{self.user} acts for customer {self.customer_id}"
