// An operator profiler for benchmarks: counts and times every libtorch operator call through the
// dispatcher's RecordFunction hooks (the mechanism under torch.profiler), without the Kineto
// tracer. Each call is attributed to the outermost operator running on its thread, so an op that
// calls others (linear -> matmul -> mm) counts once at the top level, with its inclusive time;
// `all_calls` counts every level. One profile at a time, process-wide.

#include <ATen/record_function.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace {

struct Stat {
  int64_t calls = 0;
  int64_t nanos = 0;
};

struct Profile {
  std::mutex mu;
  std::unordered_map<std::string, Stat> top;
  int64_t all_calls = 0;
  at::CallbackHandle handle = 0;
  bool running = false;
};

Profile& profile() {
  static Profile p;
  return p;
}

thread_local int depth = 0;

struct Entry : at::ObserverContext {
  std::chrono::steady_clock::time_point start;
  bool outermost = false;
};

std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction&) {
  auto entry = std::make_unique<Entry>();
  entry->outermost = depth == 0;
  depth++;
  entry->start = std::chrono::steady_clock::now();
  return entry;
}

void leave(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  auto end = std::chrono::steady_clock::now();
  depth--;
  auto* entry = static_cast<Entry*>(ctx);
  Profile& p = profile();
  std::lock_guard<std::mutex> guard(p.mu);
  p.all_calls++;
  if (entry->outermost) {
    Stat& s = p.top[fn.name()];
    s.calls++;
    s.nanos += std::chrono::duration_cast<std::chrono::nanoseconds>(end - entry->start).count();
  }
}

}  // namespace

extern "C" {

// Starts counting (clearing the previous counts); 0, or -1 when a profile is already running.
int rlvr_profile_start() {
  Profile& p = profile();
  std::lock_guard<std::mutex> guard(p.mu);
  if (p.running) return -1;
  p.top.clear();
  p.all_calls = 0;
  p.handle = at::addGlobalCallback(at::RecordFunctionCallback(enter, leave).scopes({at::RecordScope::FUNCTION}));
  p.running = true;
  return 0;
}

// Stops counting; the counts stay readable until the next start.
void rlvr_profile_stop() {
  Profile& p = profile();
  std::lock_guard<std::mutex> guard(p.mu);
  if (!p.running) return;
  at::removeCallback(p.handle);
  p.running = false;
}

// Every operator call counted, at any depth.
int64_t rlvr_profile_all_calls() {
  Profile& p = profile();
  std::lock_guard<std::mutex> guard(p.mu);
  return p.all_calls;
}

// The outermost operators as lines "name\tcalls\tnanos\n" into `buf` (at most `cap` bytes, not
// NUL-terminated); returns the full length, so a caller whose buffer was short asks again.
int64_t rlvr_profile_report(char* buf, int64_t cap) {
  Profile& p = profile();
  std::lock_guard<std::mutex> guard(p.mu);
  std::string text;
  for (const auto& [name, s] : p.top) {
    text += name + "\t" + std::to_string(s.calls) + "\t" + std::to_string(s.nanos) + "\n";
  }
  if (static_cast<int64_t>(text.size()) <= cap) std::memcpy(buf, text.data(), text.size());
  return static_cast<int64_t>(text.size());
}

}  // extern "C"
