// Launcher detection against hand-written environments.
#include <gtest/gtest.h>

#include "lowbit/launch/detect.h"
#include "lowbit/launch/init.h"

namespace lowbit::launch {
namespace {

LaunchInfo DetectOk(std::map<std::string, std::string> vars) {
  absl::StatusOr<LaunchInfo> info = Detect(MapEnvironment(std::move(vars)));
  EXPECT_TRUE(info.ok()) << info.status();
  return info.ok() ? *info : LaunchInfo{};
}

std::string DetectError(std::map<std::string, std::string> vars) {
  absl::StatusOr<LaunchInfo> info = Detect(MapEnvironment(std::move(vars)));
  EXPECT_FALSE(info.ok());
  return info.ok() ? "" : std::string(info.status().message());
}

TEST(Detect, SingleProcessWhenNothingIsSet) {
  LaunchInfo info = DetectOk({});
  EXPECT_EQ(info.launcher, Launcher::kSingleProcess);
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
}

TEST(Detect, Torchrun) {
  LaunchInfo info = DetectOk({{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                              {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"},
                              {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RUN_ID", "x"}});
  EXPECT_EQ(info.launcher, Launcher::kTorchrun);
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 2);
  EXPECT_EQ(info.master_addr, "10.0.0.1");
  EXPECT_EQ(info.master_port, 29500);
  EXPECT_TRUE(info.agent_store);
  EXPECT_EQ(info.restart_count, 0);
}

// A restarted torchrun job: its attempt number keys the store.
TEST(Detect, TorchrunRestartCount) {
  LaunchInfo info = DetectOk({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"},
                              {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_EQ(info.restart_count, 2);
  const std::string error = DetectError({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"},
                                         {"MASTER_PORT", "1"}, {"TORCHELASTIC_RESTART_COUNT", "-1"}});
  EXPECT_NE(error.find("TORCHELASTIC_RESTART_COUNT must be >= 0, got -1"), std::string::npos) << error;
}

TEST(Detect, TorchrunWithoutMasterAddrIsAnError) {
  const std::string error = DetectError({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29500"}});
  EXPECT_NE(error.find("MASTER_ADDR"), std::string::npos) << error;
}

TEST(Detect, RankOutsideWorldIsAnError) {
  const std::string error = DetectError(
      {{"RANK", "4"}, {"WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}});
  EXPECT_NE(error.find("RANK=4"), std::string::npos) << error;
  EXPECT_NE(error.find("WORLD_SIZE=4"), std::string::npos) << error;
}

TEST(Detect, UnparsableNumberNamesVariableAndValue) {
  const std::string error = DetectError({{"OMPI_COMM_WORLD_RANK", "one"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
  EXPECT_NE(error.find("OMPI_COMM_WORLD_RANK"), std::string::npos) << error;
  EXPECT_NE(error.find("'one'"), std::string::npos) << error;
}

TEST(Detect, BadPortIsAnError) {
  const std::string error = DetectError(
      {{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}});
  EXPECT_NE(error.find("70000"), std::string::npos) << error;
}

TEST(Detect, OpenMpi) {
  LaunchInfo info = DetectOk({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(info.launcher, Launcher::kOpenMpi);
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_size, 2);
}

TEST(Detect, OpenMpiLocalRankOutsideLocalSize) {
  const std::string error = DetectError({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                                         {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_NE(error.find("OMPI_COMM_WORLD_LOCAL_RANK=3"), std::string::npos) << error;
}

TEST(Detect, Slurm) {
  LaunchInfo info = DetectOk({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                              {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"}});
  EXPECT_EQ(info.launcher, Launcher::kSlurm);
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 4);
}

TEST(Detect, Pmi) {
  LaunchInfo info = DetectOk({{"PMI_RANK", "1"}, {"PMI_SIZE", "3"}});
  EXPECT_EQ(info.launcher, Launcher::kPmi);
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.world_size, 3);
}

TEST(Detect, PmixNeedsAWorldSize) {
  EXPECT_NE(DetectError({{"PMIX_RANK", "0"}}).find("world size"), std::string::npos);
  LaunchInfo info = DetectOk({{"PMIX_RANK", "1"}, {"PRTE_NUM_PROCS", "2"}});
  EXPECT_EQ(info.launcher, Launcher::kPmix);
  EXPECT_EQ(info.world_size, 2);
}

TEST(Detect, TimeoutAndBackendOverrides) {
  LaunchInfo info = DetectOk({{"LOWBIT_TIMEOUT_S", "2.5"}, {"LOWBIT_BACKEND", "gloo"}});
  EXPECT_EQ(info.timeout.count(), 2500);
  EXPECT_EQ(info.backend, "gloo");
  EXPECT_NE(DetectError({{"LOWBIT_TIMEOUT_S", "-1"}}).find("LOWBIT_TIMEOUT_S"), std::string::npos);
}

TEST(InitProcessGroup, UnknownBackendNamesTheValue) {
  absl::StatusOr<Backend> backend = ParseBackend("infiniband");
  ASSERT_FALSE(backend.ok());
  EXPECT_NE(backend.status().message().find("'infiniband'"), std::string::npos);
}

TEST(InitProcessGroup, BadHostsSettingNamesVariableAndValue) {
  EXPECT_EQ(DetectOk({{"LOWBIT_HOSTS", "many"}}).hosts, "many");
  LaunchInfo info;
  info.hosts = "several";
  auto pg = InitProcessGroup(info, InitOptions{});
  ASSERT_FALSE(pg.ok());
  EXPECT_NE(pg.status().message().find("LOWBIT_HOSTS"), std::string::npos) << pg.status();
  EXPECT_NE(pg.status().message().find("'several'"), std::string::npos) << pg.status();
  for (auto h : {comm::Hosts::kDetect, comm::Hosts::kOne, comm::Hosts::kMany}) {
    EXPECT_EQ(*comm::ParseHosts(comm::ToString(h)), h);
  }
}

TEST(InitProcessGroup, LocalRefusesSeveralRanks) {
  LaunchInfo info;
  info.launcher = Launcher::kOpenMpi;
  info.world_size = 2;
  auto pg = InitProcessGroup(info, InitOptions{Backend::kLocal});
  ASSERT_FALSE(pg.ok());
  EXPECT_NE(pg.status().message().find("started 2"), std::string::npos) << pg.status();
}

TEST(InitProcessGroup, SingleProcessGetsLocalGroup) {
  auto pg = InitProcessGroup(LaunchInfo{}, InitOptions{});
  ASSERT_TRUE(pg.ok()) << pg.status();
  EXPECT_EQ((*pg)->Backend(), "local");
  EXPECT_EQ((*pg)->Size(), 1);
}

TEST(InitProcessGroup, NcclWithoutDeviceIsRefused) {
  auto pg = InitProcessGroup(LaunchInfo{}, InitOptions{Backend::kNccl});
  ASSERT_FALSE(pg.ok());
  EXPECT_NE(pg.status().message().find("NCCL"), std::string::npos) << pg.status();
}

}  // namespace
}  // namespace lowbit::launch
