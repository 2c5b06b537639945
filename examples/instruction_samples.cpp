// Prints examples of the built-in instruction benchmark (data/instructions.hpp): for every split
// and every family in it, a few examples as model text, with the gist-token placeholder between
// the instruction and the input.
//
// Usage: instruction_samples [--per-family N] [--split train|seen|unseen|hard] [--family NAME]
//                            [--seed S] [--gist K] [--no-spelling] [--summary] [--markdown]
//   --summary   prints the families and the mean lengths per split instead of examples
//   --markdown  prints the families table of docs/instruction_benchmark.md
#include <condense/data/instructions.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

using namespace condense::data;

namespace {

std::size_t count_words(const std::string& s) {
  std::istringstream in(s);
  std::size_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

std::string steps_text(const TaskFamily& f) {
  std::string out;
  for (std::size_t i = 0; i < f.steps.size(); ++i) out += (i ? " > " : "") + std::string(op_info(f.steps[i]).name);
  return out;
}

// The first split a family appears in.
Split home_split(const TaskFamily& f) {
  return f.role == FamilyRole::Seen ? Split::Train : f.role == FamilyRole::HeldOut ? Split::Unseen : Split::Hard;
}

std::string md_escape(std::string s) {
  std::string out;
  for (const char c : s) out += c == '|' ? std::string("\\|") : std::string(1, c);
  return out;
}

// The parameters an example's instruction names, e.g. "k = 2, sep = \" + \"".
std::string params_text(const TaskFamily& f, const TaskParams& p) {
  std::string out;
  for (const ParamKind k : f.params()) {
    std::string v = k == ParamKind::Sep      ? "\"" + p.sep + "\""
                    : k == ParamKind::Letter ? std::string(1, p.letter)
                    : k == ParamKind::Word   ? p.word
                    : k == ParamKind::K      ? std::to_string(p.k)
                    : k == ParamKind::Count  ? std::to_string(p.count)
                    : k == ParamKind::N      ? std::to_string(p.n)
                                             : std::to_string(p.digit);
    out += (out.empty() ? "" : ", ") + std::string(slot_name(k)) + " = " + v;
  }
  return out.empty() ? "-" : out;
}

// Two tables: seen and held-out families with an example instruction (template 0), and the
// hard families with their parameters instead (their instructions are long).
void print_markdown(const InstructionBenchmark& b) {
  std::ostringstream hard;
  std::cout << "| # | family | role | ops | input | example instruction | example input | example output |\n"
            << "|---|---|---|---|---|---|---|---|\n";
  hard << "| # | family | ops | input | parameters | example input | example output |\n"
       << "|---|---|---|---|---|---|---|\n";
  int i = 0;
  for (const auto& f : b.families()) {
    std::optional<InstructionExample> ex;
    for (std::uint64_t seed = 1; !ex; ++seed)
      for (const auto& e : b.sample_family(f.name, home_split(f), 8, seed))
        if (e.template_id == 0) {
          ex = e;
          break;
        }
    const std::string name = "`" + f.name + "`" + (f.spelling() ? " (s)" : "");
    if (f.role == FamilyRole::Hard) {
      hard << "| " << ++i << " | " << name << " | " << steps_text(f) << " | " << input_kind_name(f.input) << " | "
           << md_escape(params_text(f, ex->params)) << " | `" << md_escape(ex->input) << "` | `"
           << md_escape(ex->output) << "` |\n";
    } else {
      std::cout << "| " << ++i << " | " << name << " | " << role_name(f.role) << " | " << steps_text(f) << " | "
                << input_kind_name(f.input) << " | " << md_escape(ex->instruction) << " | `" << md_escape(ex->input)
                << "` | `" << md_escape(ex->output) << "` |\n";
    }
  }
  std::cout << "\n" << hard.str();
}

void print_summary(const InstructionBenchmark& b) {
  std::cout << b.families().size() << " families\n";
  for (const auto& f : b.families())
    std::cout << "  " << f.name << "  [" << role_name(f.role) << "; " << steps_text(f) << "; " << f.templates.size()
              << " templates" << (f.spelling() ? "; spelling" : "") << "]\n";
  for (const Split s : all_splits) {
    const auto ex = b.sample(s, 2000, 1);
    double instr = 0, input = 0, output = 0;
    for (const auto& e : ex) {
      instr += static_cast<double>(count_words(e.instruction));
      input += static_cast<double>(count_words(e.input));
      output += static_cast<double>(count_words(e.output));
    }
    const double n = static_cast<double>(ex.size());
    std::printf("%-7s %2zu families, mean words: instruction %.1f, input %.1f, output %.1f\n",
                std::string(split_name(s)).c_str(), b.families_in(s).size(), instr / n, input / n, output / n);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t per_family = 2, gist = 1;
  std::uint64_t seed = 1;
  std::optional<Split> only_split;
  std::string only_family;
  bool markdown = false, summary = false;
  InstructionBenchmarkOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--per-family") {
      per_family = std::stoul(next());
    } else if (a == "--split") {
      only_split = parse_split(next());
    } else if (a == "--family") {
      only_family = next();
    } else if (a == "--seed") {
      seed = std::stoull(next());
    } else if (a == "--gist") {
      gist = std::stoul(next());
    } else if (a == "--no-spelling") {
      options.spelling = false;
    } else if (a == "--markdown") {
      markdown = true;
    } else if (a == "--summary") {
      summary = true;
    } else {
      std::cerr << "unknown argument " << a << "\n";
      return 2;
    }
  }
  const InstructionBenchmark bench(options);
  if (markdown) {
    print_markdown(bench);
    return 0;
  }
  if (summary) {
    print_summary(bench);
    return 0;
  }
  for (const Split split : all_splits) {
    if (only_split && *only_split != split) continue;
    const auto fams = bench.families_in(split);
    std::cout << "==================== split: " << split_name(split) << " (" << fams.size() << " families)\n";
    for (const std::size_t fi : fams) {
      const TaskFamily& f = bench.families()[fi];
      if (!only_family.empty() && f.name != only_family) continue;
      std::cout << "---- " << f.name << " [" << role_name(f.role) << "; " << steps_text(f) << "]\n";
      for (const auto& e : bench.sample_family(f.name, split, per_family, seed)) {
        std::cout << "(template " << e.template_id << ")\n" << format_example(e).text(gist, "<GIST>") << "\n\n";
      }
    }
  }
  return 0;
}
