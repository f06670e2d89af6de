"""The API's endpoints: parse, call one service, answer. Every query is limited to the
calling key's project, so another project's ids answer 404."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from botplatform.api.auth import BearerKeyAuthentication, HasScope
from botplatform.api.errors import ApiError
from botplatform.api.idempotency import idempotent
from botplatform.api.serializers import (
    CustomerCreateSerializer,
    CustomerSerializer,
    ErrorSerializer,
    EventCreateSerializer,
    EventResultSerializer,
    HistoryEntrySerializer,
    HoldCreateSerializer,
    HoldSerializer,
    PurchaseCreateSerializer,
    PurchaseSerializer,
    RefundCreateSerializer,
    RefundSerializer,
)
from users.customers import customer_create, customer_find, customer_payload
from users.holds import available_balance, hold_confirm, hold_create, hold_release
from users.models import BonusTransaction, BotUser
from users.models_pos import Hold
from users.purchases import purchase_record, refund_record

IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Same key + same body answers the first result; a different body, 409.",
)


def _errors(*codes: int) -> dict:
    return {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 429, *codes)}


class ApiView(APIView):
    authentication_classes = [BearerKeyAuthentication]
    permission_classes = [HasScope]
    required_scopes: dict[str, tuple[str, ...]] = {}

    @property
    def project_id(self) -> int:
        return self.request.auth.project_id

    def customer(self, customer_id: int) -> BotUser:
        found = customer_find(project_id=self.project_id, customer_id=customer_id)
        if found is None:
            raise ApiError("customer_not_found", "no such customer in this project", 404)
        return found


def customer_data(user: BotUser) -> dict:
    return CustomerSerializer(
        {**customer_payload(user), "available": available_balance(user.pk)}
    ).data


class CustomersView(ApiView):
    required_scopes = {"GET": ("read",), "POST": ("accrue",)}

    @extend_schema(
        operation_id="customers_lookup",
        summary="Find a customer by phone, Telegram id or card code (exactly one)",
        parameters=[
            OpenApiParameter("phone", OpenApiTypes.STR, description="E.164; encode + as %2B"),
            OpenApiParameter("telegram_id", OpenApiTypes.INT64),
            OpenApiParameter("card_code", OpenApiTypes.STR),
        ],
        responses={200: CustomerSerializer, **_errors(404)},
    )
    def get(self, request):
        given = {
            name: request.query_params[name]
            for name in ("phone", "telegram_id", "card_code")
            if request.query_params.get(name)
        }
        if len(given) != 1:
            raise ApiError("invalid", "give exactly one of phone, telegram_id, card_code", 400)
        name, value = next(iter(given.items()))
        if name == "telegram_id":
            if not value.isascii() or not value.isdigit() or len(value) > 18:
                raise ApiError("invalid", "telegram_id must be a positive whole number", 400)
            value = int(value)
        found = customer_find(project_id=self.project_id, **{name: value})
        if found is None:
            raise ApiError("customer_not_found", "no customer with this " + name, 404)
        return Response(customer_data(found))

    @extend_schema(
        operation_id="customers_create",
        summary="Create a customer at the till (linked when they share this phone in the bot)",
        parameters=[IDEMPOTENCY],
        request=CustomerCreateSerializer,
        responses={200: CustomerSerializer, 201: CustomerSerializer, **_errors(409)},
    )
    @idempotent
    def post(self, request):
        data = CustomerCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user, created = customer_create(project_id=self.project_id, **data.validated_data)
        return Response(
            customer_data(user), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class CustomerView(ApiView):
    required_scopes = {"GET": ("read",)}

    @extend_schema(
        operation_id="customers_read",
        summary="A customer's balance, available balance and level",
        responses={200: CustomerSerializer, **_errors(404)},
    )
    def get(self, request, customer_id: int):
        return Response(customer_data(self.customer(customer_id)))


class HistoryPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class CustomerHistoryView(ApiView):
    required_scopes = {"GET": ("read",)}

    @extend_schema(
        operation_id="customers_history",
        summary="The customer's ledger entries, newest first (paginated)",
        parameters=[
            OpenApiParameter("page", OpenApiTypes.INT),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="At most 100."),
        ],
        responses={200: HistoryEntrySerializer(many=True), **_errors(404)},
    )
    def get(self, request, customer_id: int):
        user = self.customer(customer_id)
        paginator = HistoryPagination()
        entries = BonusTransaction.objects.filter(user=user).order_by("-created_at", "-id")
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(HistoryEntrySerializer(page, many=True).data)


class CustomerEventsView(ApiView):
    required_scopes = {"POST": ("events",)}

    @extend_schema(
        operation_id="customers_events",
        summary="Send an event: starts the workflow whose 'event' trigger has this name",
        parameters=[IDEMPOTENCY],
        request=EventCreateSerializer,
        responses={202: EventResultSerializer, **_errors(404, 409)},
    )
    @idempotent
    def post(self, request, customer_id: int):
        from workflows.events_in import customer_event

        user = self.customer(customer_id)
        data = EventCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if user.telegram_id is None:
            raise ApiError("not_in_telegram", "this customer has not opened the bot yet", 409)
        started = customer_event(
            user=user, name=data.validated_data["name"], payload=data.validated_data["payload"]
        )
        return Response(
            {"name": data.validated_data["name"], "started": started},
            status=status.HTTP_202_ACCEPTED,
        )


def purchase_data(purchase, balance: int) -> dict:
    purchase.balance = balance
    return PurchaseSerializer(purchase).data


class PurchasesView(ApiView):
    required_scopes = {"POST": ("accrue",)}

    @extend_schema(
        operation_id="purchases_create",
        summary="Record a purchase and accrue bonuses (order_id earns once)",
        parameters=[IDEMPOTENCY],
        request=PurchaseCreateSerializer,
        responses={200: PurchaseSerializer, 201: PurchaseSerializer, **_errors(404, 409)},
    )
    @idempotent
    def post(self, request):
        data = PurchaseCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        customer = self.customer(values["customer_id"])
        result = purchase_record(
            project_id=self.project_id,
            customer_id=customer.pk,
            order_id=values["order_id"],
            amount=values["amount"],
            currency=values["currency"],
            items=PurchaseCreateSerializer(values).data.get("items") or [],
            store=values["store"],
            api_key_id=request.auth.pk,
        )
        if result.created:
            from workflows.events_in import purchase_event

            purchase_event(result.purchase)
        return Response(
            purchase_data(result.purchase, result.balance),
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class RefundsView(ApiView):
    required_scopes = {"POST": ("accrue",)}

    @extend_schema(
        operation_id="refunds_create",
        summary="Refund an order (fully or partly) and claw back its bonuses",
        parameters=[IDEMPOTENCY],
        request=RefundCreateSerializer,
        responses={200: RefundSerializer, 201: RefundSerializer, **_errors(404, 409)},
    )
    @idempotent
    def post(self, request):
        data = RefundCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        result = refund_record(
            project_id=self.project_id,
            order_id=values["order_id"],
            refund_id=values["refund_id"],
            amount=values.get("amount"),
        )
        refund = result.refund
        refund.balance = result.balance
        return Response(
            RefundSerializer(refund).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class HoldsView(ApiView):
    required_scopes = {"POST": ("redeem",)}

    @extend_schema(
        operation_id="holds_create",
        summary="Hold bonuses for a redemption (counts against the available balance)",
        parameters=[IDEMPOTENCY],
        request=HoldCreateSerializer,
        responses={201: HoldSerializer, **_errors(404, 409)},
    )
    @idempotent
    def post(self, request):
        data = HoldCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        customer = self.customer(values["customer_id"])
        hold = hold_create(
            project_id=self.project_id,
            customer_id=customer.pk,
            amount=values["amount"],
            expires_in_minutes=values.get("expires_in_minutes"),
            order_id=values["order_id"],
            store=values["store"],
            api_key_id=request.auth.pk,
        )
        return Response(HoldSerializer(hold).data, status=status.HTTP_201_CREATED)


class HoldView(ApiView):
    required_scopes = {"GET": ("redeem",)}

    def hold(self, hold_id: int) -> Hold:
        hold = Hold.objects.filter(pk=hold_id, project_id=self.project_id).first()
        if hold is None:
            raise NotFound("no such hold in this project")
        return hold

    @extend_schema(
        operation_id="holds_read",
        summary="A hold's status (poll it while the customer approves)",
        responses={200: HoldSerializer, **_errors(404)},
    )
    def get(self, request, hold_id: int):
        return Response(HoldSerializer(self.hold(hold_id)).data)


class HoldConfirmView(ApiView):
    required_scopes = {"POST": ("redeem",)}

    @extend_schema(
        operation_id="holds_confirm",
        summary="Spend the held bonuses",
        parameters=[IDEMPOTENCY],
        request=None,
        responses={200: HoldSerializer, **_errors(404, 409)},
    )
    @idempotent
    def post(self, request, hold_id: int):
        hold = hold_confirm(hold_id=hold_id, project_id=self.project_id)
        return Response(HoldSerializer(hold).data)


class HoldReleaseView(ApiView):
    required_scopes = {"POST": ("redeem",)}

    @extend_schema(
        operation_id="holds_release",
        summary="Give the held bonuses back",
        parameters=[IDEMPOTENCY],
        request=None,
        responses={200: HoldSerializer, **_errors(404, 409)},
    )
    @idempotent
    def post(self, request, hold_id: int):
        hold = hold_release(hold_id=hold_id, project_id=self.project_id)
        return Response(HoldSerializer(hold).data)
