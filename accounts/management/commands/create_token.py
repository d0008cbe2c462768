"""Create a user (if needed) and print its API token on the last line."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token

from accounts.models import CustomerAccount


class Command(BaseCommand):
    help = "Create USERNAME if needed and print its token on the last line."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        role = parser.add_mutually_exclusive_group()
        role.add_argument("--staff", action="store_true", help="may see everything")
        role.add_argument(
            "--customer", metavar="CUSTOMER_ID", help="acts for this customer only"
        )

    def handle(
        self, *args, username: str, staff: bool, customer: str | None, **_
    ) -> None:
        if not username.strip():
            raise CommandError("USERNAME must not be empty")
        user, created = get_user_model().objects.get_or_create(username=username)
        if staff and not user.is_staff:
            user.is_staff = True
            user.save(update_fields=["is_staff"])
        if customer:
            CustomerAccount.objects.update_or_create(
                user=user, defaults={"customer_id": customer}
            )
        token, _ = Token.objects.get_or_create(user=user)

        role = "staff" if user.is_staff else f"customer {customer or '-'}"
        verb = "created" if created else "found"
        self.stderr.write(f"user {username} {verb} ({role})")
        self.stdout.write(token.key)
