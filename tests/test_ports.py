"""The local backends implement the ports the workflows are written against."""

from jaxcook import ports
from jaxcook.data.dataset import ConversationDataset
from jaxcook.engine.training_client import LocalTrainingClient
from jaxcook.sampling.client import LocalSamplingClient
from jaxcook.sampling.completers import LocalMessageCompleter, LocalTokenCompleter


def test_local_clients_implement_the_ports():
    assert issubclass(LocalTrainingClient, ports.TrainingClient)
    assert issubclass(LocalSamplingClient, ports.SamplingClient)
    assert issubclass(LocalTokenCompleter, ports.TokenCompleter)
    assert issubclass(LocalMessageCompleter, ports.MessageCompleter)
    assert issubclass(ConversationDataset, ports.SupervisedDataset)


def test_a_class_missing_a_call_is_not_a_training_client():
    class Partial:
        def forward_backward(self, data, loss_fn="cross_entropy", loss_fn_config=None): ...

    assert not issubclass(Partial, ports.TrainingClient)
