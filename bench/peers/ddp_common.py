"""What the PyTorch peers share: the launch flags, rank and world from
OpenMPI's variables (or torchrun's), Gloo's rendezvous, and PyTorch's
communication hooks by name."""
import os

HOOKS = ["allreduce", "fp16", "powersgd"]


def add_ddp_flags(p, default_port):
    p.add_argument("--hook", default="allreduce", choices=HOOKS)
    p.add_argument("--powersgd_rank", type=int, default=4)
    p.add_argument("--powersgd_start_iter", type=int, default=2)
    p.add_argument("--master_addr", default="127.0.0.1")
    p.add_argument("--master_port", type=int, default=default_port)
    p.add_argument("--ifname", default="", help="Gloo's interface (netsim: eth0; default: Gloo's choice)")


def init_ddp(a, model, **ddp_options):
    """Joins the Gloo group and wraps `model` in DDP with --hook; returns (ddp, rank, world)."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel

    env = os.environ
    rank = int(env.get("OMPI_COMM_WORLD_RANK", env.get("RANK", "0")))
    world = int(env.get("OMPI_COMM_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    if a.ifname:
        os.environ["GLOO_SOCKET_IFNAME"] = a.ifname
    if not dist.is_initialized():
        dist.init_process_group("gloo", init_method=f"tcp://{a.master_addr}:{a.master_port}", rank=rank,
                                world_size=world)
    ddp = DistributedDataParallel(model, **ddp_options)
    if a.hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    elif a.hook == "powersgd":
        state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=a.powersgd_rank,
                                            start_powerSGD_iter=a.powersgd_start_iter, use_error_feedback=True,
                                            warm_start=True, random_seed=a.seed)
        ddp.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    return ddp, rank, world
