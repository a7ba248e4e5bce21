// flextron launch: run K copies of a flextron command on this machine as one data-parallel
// group (what torchrun does for Python): each gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR
// and MASTER_PORT. If one fails, the others are stopped and its exit code is returned.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "number_options.h"

namespace flextron::cli {

namespace {

struct LaunchArgs {
  int nproc = 2;
  int master_port = 29500;
  std::string master_addr = "127.0.0.1";
  int node_rank = 0;
  int nnodes = 1;
};

int run_launch(const LaunchArgs& a, std::vector<std::string> command) {
  if (!command.empty() && command.front() == "--") command.erase(command.begin());
  if (command.empty())
    fail("launch", "give the command to run after --, e.g. -- train-elastic ...");
  if (a.nproc < 1) fail("--nproc", "must be at least 1");
  if (a.node_rank < 0 || a.node_rank >= a.nnodes)
    fail("--node-rank",
         std::to_string(a.node_rank) + " outside [0, " + std::to_string(a.nnodes) + ")");
  const int world = a.nproc * a.nnodes;
  std::vector<pid_t> children;
  for (int local = 0; local < a.nproc; ++local) {
    const pid_t pid = fork();
    if (pid < 0) fail("launch", "fork failed");
    if (pid == 0) {
      setenv("RANK", std::to_string(a.node_rank * a.nproc + local).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(local).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      setenv("MASTER_ADDR", a.master_addr.c_str(), 1);
      setenv("MASTER_PORT", std::to_string(a.master_port).c_str(), 1);
      std::vector<char*> argv;
      std::string self = "flextron";
      argv.push_back(self.data());
      for (auto& arg : command) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      std::perror("flextron launch: exec");
      _exit(127);
    }
    children.push_back(pid);
  }
  int exit_code = 0;
  size_t running = children.size();
  while (running > 0) {
    int status = 0;
    const pid_t pid = wait(&status);
    if (pid < 0) break;
    --running;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0 && exit_code == 0) {
      exit_code = code;
      std::fprintf(stderr, "flextron launch: a process exited with %d; stopping the others\n",
                   code);
      for (pid_t c : children)
        if (c != pid) kill(c, SIGTERM);
    }
  }
  return exit_code;
}

}  // namespace

void register_launch(CLI::App& app) {
  auto a = std::make_shared<LaunchArgs>();
  auto* cmd = app.add_subcommand(
      "launch",
      "Run a command as K data-parallel processes: launch --nproc K -- train-elastic ...");
  cmd->add_option("--nproc", a->nproc, "Processes on this machine")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--nnodes", a->nnodes, "Machines in the group")
      ->check(positive())
      ->capture_default_str();
  cmd->add_option("--node-rank", a->node_rank, "This machine's index")
      ->check(non_negative())
      ->capture_default_str();
  cmd->add_option("--master-addr", a->master_addr, "Address of the machine with rank 0")
      ->capture_default_str();
  cmd->add_option("--master-port", a->master_port, "Rendezvous port")
      ->check(in_range(1, 65535))
      ->capture_default_str();
  auto command = std::make_shared<std::vector<std::string>>();
  cmd->add_option("command", *command, "The flextron command to run, after --")->expected(1, -1);
  cmd->callback([a, command] {
    const int code = run_launch(*a, *command);
    if (code != 0) std::exit(code);
  });
}

}  // namespace flextron::cli
