"""The seed's REST API on DRF. OWNED BY the api helper."""

from rest_framework.views import APIView


class ResultView(APIView):
    pass


class EmailListView(APIView):
    pass


class EmailDetailView(APIView):
    pass


class StatsView(APIView):
    pass
