"""cardmill: turn batches of documents into structured cards with an LLM.

The public API, re-exported from the subpackages:

```python
import cardmill

async with cardmill.SQLiteStorage.open("cardmill.db") as storage:
    run = await storage.create_run([cardmill.Document.from_path("notes.md")])
    summary = await cardmill.Engine(storage, cardmill.ExtractiveProvider()).execute(run.id)
```
"""

from __future__ import annotations

from ._cost import DEFAULT_PRICES as DEFAULT_PRICES
from ._cost import Price as Price
from ._cost import PriceTable as PriceTable
from ._cost import cost_of as cost_of
from ._recipe import BUILTIN_RECIPES as BUILTIN_RECIPES
from ._recipe import FLASHCARDS as FLASHCARDS
from ._recipe import KEY_POINTS as KEY_POINTS
from ._recipe import STUDY_CARDS as STUDY_CARDS
from ._recipe import Field as Field
from ._recipe import FieldType as FieldType
from ._recipe import Recipe as Recipe
from ._recipe import load_recipe as load_recipe
from ._sync import analyze_sync as analyze_sync
from ._sync import resume_sync as resume_sync
from ._version import __version__ as __version__
from .engine import AdaptiveBucket as AdaptiveBucket
from .engine import Engine as Engine
from .engine import Limits as Limits
from .engine import RetryPolicy as RetryPolicy
from .engine import RunSummary as RunSummary
from .errors import BatchNotFound as BatchNotFound
from .errors import CardmillError as CardmillError
from .errors import DatabaseError as DatabaseError
from .errors import DocumentError as DocumentError
from .errors import InputError as InputError
from .errors import InvalidDraft as InvalidDraft
from .errors import InvalidOutput as InvalidOutput
from .errors import MissingExtra as MissingExtra
from .errors import Overloaded as Overloaded
from .errors import PermanentError as PermanentError
from .errors import ProviderError as ProviderError
from .errors import RateLimited as RateLimited
from .errors import RunNotFound as RunNotFound
from .errors import StorageError as StorageError
from .errors import Terminated as Terminated
from .errors import TransientError as TransientError
from .errors import TransientStorageError as TransientStorageError
from .errors import UnstorableData as UnstorableData
from .errors import UploadNotFound as UploadNotFound
from .errors import WrongEventLoop as WrongEventLoop
from .model import AnswerStats as AnswerStats
from .model import Batch as Batch
from .model import BatchCounts as BatchCounts
from .model import BatchItem as BatchItem
from .model import BatchState as BatchState
from .model import Card as Card
from .model import CardDraft as CardDraft
from .model import CardPage as CardPage
from .model import Document as Document
from .model import FieldValue as FieldValue
from .model import LimitKind as LimitKind
from .model import RateHint as RateHint
from .model import Run as Run
from .model import RunStatus as RunStatus
from .model import StoredAnswer as StoredAnswer
from .model import Upload as Upload
from .model import UploadStatus as UploadStatus
from .model import Usage as Usage
from .providers import Analysis as Analysis
from .providers import AnthropicProvider as AnthropicProvider
from .providers import BatchProvider as BatchProvider
from .providers import BatchResult as BatchResult
from .providers import BatchStatus as BatchStatus
from .providers import ExtractiveProvider as ExtractiveProvider
from .providers import OpenAICompatibleProvider as OpenAICompatibleProvider
from .providers import Provider as Provider
from .storage import AnswerStore as AnswerStore
from .storage import MemoryStorage as MemoryStorage
from .storage import SQLiteStorage as SQLiteStorage
from .storage import Storage as Storage

__all__ = [
    "BUILTIN_RECIPES",
    "DEFAULT_PRICES",
    "FLASHCARDS",
    "KEY_POINTS",
    "STUDY_CARDS",
    "AdaptiveBucket",
    "Analysis",
    "AnswerStats",
    "AnswerStore",
    "AnthropicProvider",
    "Batch",
    "BatchCounts",
    "BatchItem",
    "BatchNotFound",
    "BatchProvider",
    "BatchResult",
    "BatchState",
    "BatchStatus",
    "Card",
    "CardDraft",
    "CardPage",
    "CardmillError",
    "DatabaseError",
    "Document",
    "DocumentError",
    "Engine",
    "ExtractiveProvider",
    "Field",
    "FieldType",
    "FieldValue",
    "InputError",
    "InvalidDraft",
    "InvalidOutput",
    "LimitKind",
    "Limits",
    "MemoryStorage",
    "MissingExtra",
    "OpenAICompatibleProvider",
    "Overloaded",
    "PermanentError",
    "Price",
    "PriceTable",
    "Provider",
    "ProviderError",
    "RateHint",
    "RateLimited",
    "Recipe",
    "RetryPolicy",
    "Run",
    "RunNotFound",
    "RunStatus",
    "RunSummary",
    "SQLiteStorage",
    "Storage",
    "StorageError",
    "StoredAnswer",
    "Terminated",
    "TransientError",
    "TransientStorageError",
    "UnstorableData",
    "Upload",
    "UploadNotFound",
    "UploadStatus",
    "Usage",
    "WrongEventLoop",
    "analyze_sync",
    "cost_of",
    "load_recipe",
    "resume_sync",
]
