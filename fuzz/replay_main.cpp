// flextron_fuzz: every fuzz target in one program, for the test suite and for machines without
// clang's libFuzzer.
//
//   flextron_fuzz list                      the targets
//   flextron_fuzz seeds DIR [SHARED_DATA]   writes a seed corpus per target under DIR/<target>/
//   flextron_fuzz run TARGET [--seconds N] [--seed S] [--findings DIR] PATH...
//
// `run` replays every file (or every file of every directory) given, then mutates them for N
// seconds (default 0: replay only) with byte-level mutations in the spirit of libFuzzer's:
// bit flips, interesting integers written over 1/2/4/8 bytes, erased, inserted and duplicated
// ranges, truncation, and splices of two inputs. An exception other than flextron::Error that
// escapes the target is a finding: the input is written to the findings directory (default
// "."), named after the target and the input's hash, and the run exits 1. (Crashes end the
// process; scripts/fuzz.sh, with libFuzzer and the sanitizers, keeps those inputs too.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_seeds.h"
#include "fuzz_target.h"

namespace {

namespace fs = std::filesystem;
using flextron::fuzz::TargetFunction;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> load_corpus(const std::vector<std::string>& paths) {
  std::vector<std::string> corpus;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> files;
      for (const auto& entry : fs::recursive_directory_iterator(p))
        if (entry.is_regular_file()) files.push_back(entry.path());
      std::sort(files.begin(), files.end());  // the same order, and so the same run, every time
      for (const auto& f : files) corpus.push_back(read_bytes(f));
    } else if (fs::is_regular_file(p)) {
      corpus.push_back(read_bytes(p));
    } else {
      throw std::runtime_error("no such file or directory: " + p);
    }
  }
  return corpus;
}

// The values that most often sit on a boundary: sizes of 0, -1, the type limits, powers of two.
const int64_t kInteresting[] = {0,          1,          -1,         2,       16,     32,      64,
                                127,        128,        255,        256,     1024,   4096,    65535,
                                65536,      INT32_MAX,  INT32_MIN,  INT64_MAX, INT64_MIN,
                                (1LL << 32), (1LL << 40)};

class Mutator {
 public:
  explicit Mutator(uint64_t seed, size_t max_size) : rng_(seed), max_size_(max_size) {}

  std::string mutate(std::string input, const std::vector<std::string>& corpus) {
    const int rounds = 1 + static_cast<int>(below(4));
    for (int r = 0; r < rounds; ++r) mutate_once(input, corpus);
    if (input.size() > max_size_) input.resize(max_size_);
    return input;
  }

 private:
  uint64_t below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  void mutate_once(std::string& s, const std::vector<std::string>& corpus) {
    switch (below(9)) {
      case 0:  // flip one bit
        if (!s.empty()) s[below(s.size())] ^= static_cast<char>(1u << below(8));
        break;
      case 1:  // a random byte
        if (!s.empty()) s[below(s.size())] = static_cast<char>(below(256));
        break;
      case 2: {  // an interesting integer over 1, 2, 4 or 8 bytes, little-endian
        const size_t width = size_t{1} << below(4);
        if (s.size() < width) break;
        const int64_t value = kInteresting[below(std::size(kInteresting))];
        std::memcpy(&s[below(s.size() - width + 1)], &value, width);
        break;
      }
      case 3:  // erase a range
        if (!s.empty()) {
          const size_t at = below(s.size());
          s.erase(at, 1 + below(std::min<size_t>(s.size() - at, 64)));
        }
        break;
      case 4: {  // insert random bytes
        std::string bytes(1 + below(16), '\0');
        for (auto& c : bytes) c = static_cast<char>(below(256));
        s.insert(below(s.size() + 1), bytes);
        break;
      }
      case 5:  // duplicate a range
        if (!s.empty()) {
          const size_t at = below(s.size());
          const auto piece = s.substr(at, 1 + below(std::min<size_t>(s.size() - at, 256)));
          s.insert(below(s.size() + 1), piece);
        }
        break;
      case 6:  // truncate
        s.resize(below(s.size() + 1));
        break;
      case 7: {  // splice: this input's head, another's tail
        const auto& other = corpus[below(corpus.size())];
        s = s.substr(0, below(s.size() + 1)) + other.substr(below(other.size() + 1));
        break;
      }
      default: {  // an ASCII digit or JSON punctuation (text formats)
        static const char kText[] = "0123456789-+.eE\"{}[],:\\ntrufalsn";
        if (!s.empty()) s[below(s.size())] = kText[below(sizeof(kText) - 1)];
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  size_t max_size_;
};

// Runs one input; returns the escaping exception's message, or nothing.
std::optional<std::string> run_one(TargetFunction target, const std::string& input) {
  try {
    target(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  } catch (const std::exception& e) {
    return std::string(e.what());
  } catch (...) {
    return std::string("an exception that is not a std::exception");
  }
  return std::nullopt;
}

int report_finding(const std::string& name, const std::string& input, const std::string& what,
                   const fs::path& findings) {
  fs::create_directories(findings);
  const auto path =
      findings / (name + "-" + std::to_string(std::hash<std::string>{}(input)) + ".input");
  std::ofstream(path, std::ios::binary) << input;
  std::cerr << "flextron_fuzz: " << name << ": FINDING: " << what << "\n  input ("
            << input.size() << " bytes) written to " << path.string() << "\n";
  return 1;
}

int run(const std::string& name, const std::vector<std::string>& args) {
  const auto& all = flextron::fuzz::targets();
  const auto it = all.find(name);
  if (it == all.end()) throw std::runtime_error("no fuzz target named '" + name + "'");
  double seconds = 0;
  uint64_t seed = 1;
  fs::path findings = ".";
  std::vector<std::string> paths;
  for (size_t i = 0; i < args.size(); ++i) {
    const auto value = [&] {
      if (i + 1 >= args.size()) throw std::runtime_error(args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--seconds")
      seconds = std::stod(value());
    else if (args[i] == "--seed")
      seed = std::stoull(value());
    else if (args[i] == "--findings")
      findings = value();
    else
      paths.push_back(args[i]);
  }
  auto corpus = load_corpus(paths);
  if (corpus.empty()) corpus.emplace_back();
  size_t largest = 0;
  for (const auto& input : corpus) {
    if (auto what = run_one(it->second, input)) return report_finding(name, input, *what, findings);
    largest = std::max(largest, input.size());
  }
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  Mutator mutator(seed, std::max<size_t>(2 * largest, 4096));
  uint64_t runs = 0;
  while (elapsed() < seconds) {
    const auto input = mutator.mutate(corpus[runs % corpus.size()], corpus);
    if (auto what = run_one(it->second, input)) return report_finding(name, input, *what, findings);
    ++runs;
  }
  const double took = elapsed();
  std::printf("flextron_fuzz: %s: %zu inputs replayed, %llu mutated inputs in %.1f s (%.0f/s), "
              "no findings\n",
              name.c_str(), corpus.size(), static_cast<unsigned long long>(runs), took,
              took > 0 ? runs / took : 0.0);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 1 && args[0] == "list") {
      for (const auto& [name, _] : flextron::fuzz::targets()) std::cout << name << "\n";
      return 0;
    }
    if ((args.size() == 2 || args.size() == 3) && args[0] == "seeds") {
      flextron::fuzz::write_seeds(args[1], args.size() == 3 ? args[2] : FLEXTRON_FUZZ_SHARED_DATA);
      return 0;
    }
    if (args.size() >= 2 && args[0] == "run")
      return run(args[1], std::vector<std::string>(args.begin() + 2, args.end()));
  } catch (const std::exception& e) {
    std::cerr << "flextron_fuzz: error: " << e.what() << "\n";
    return 2;
  }
  std::cerr << "usage: flextron_fuzz list | seeds DIR [SHARED_DATA] | run TARGET [--seconds N] [--seed S] "
               "[--findings DIR] PATH...\n";
  return 2;
}
