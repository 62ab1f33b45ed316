# SPDX-License-Identifier: MIT
# Bash completion for shmq: subcommands, their options and queue names. The subcommands and options
# are read from the tool's own help (`shmq help`, `shmq COMMAND --help`) when a completion is asked
# for, so they never drift from what the installed tool accepts; queue names come from /dev/shm.
# Installed as $(PREFIX)/share/bash-completion/completions/shmq by `make install`.

# The subcommands, from the "shmq COMMAND ..." lines of `shmq help`.
_shmq_commands()
{
	"$1" help 2>/dev/null | sed -n 's/^shmq \([a-z][a-z-]*\).*/\1/p' | sort -u
}

# Every --option of one subcommand's help.
_shmq_options()
{
	"$1" "$2" --help 2>/dev/null | grep -o -- '--[a-z][a-z-]*' | sort -u
}

# The options of one subcommand that take a value: "--count N" in its help's option list.
_shmq_valued()
{
	"$1" "$2" --help 2>/dev/null | sed -n 's/^ *\(--[a-z][a-z-]*\) [A-Z][A-Z,.]*.*/\1/p' | sort -u
}

# The regular files in /dev/shm: the names a queue may have (list says which are queues).
_shmq_names()
{
	local f
	for f in /dev/shm/*; do
		[[ -f $f && ! -L $f ]] && printf '%s\n' "${f##*/}"
	done
}

_shmq()
{
	local tool=${COMP_WORDS[0]} cur=${COMP_WORDS[COMP_CWORD]} prev=
	((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
	COMPREPLY=()
	if ((COMP_CWORD == 1)); then
		mapfile -t COMPREPLY < <(compgen -W "$(_shmq_commands "$tool") --help --version" -- "$cur")
		return 0
	fi
	local cmd=${COMP_WORDS[1]}
	case $cmd in
	help)
		((COMP_CWORD == 2)) && mapfile -t COMPREPLY < <(compgen -W "$(_shmq_commands "$tool")" -- "$cur")
		return 0
		;;
	list | --help | -h | --version) ;;
	dlq)
		# NAME, then the action
		if ((COMP_CWORD == 3)) && [[ $cur != -* ]]; then
			mapfile -t COMPREPLY < <(compgen -W "list redrive purge" -- "$cur")
			return 0
		fi
		;;
	esac
	# after "--" (work's command, send's payloads) nothing is ours to complete
	local i
	for ((i = 2; i < COMP_CWORD; i++)); do
		[[ ${COMP_WORDS[i]} == -- ]] && return 0
	done
	case $prev in
	--dispatch)
		mapfile -t COMPREPLY < <(compgen -W "round-robin random weighted key-hash least-loaded" -- "$cur")
		return 0
		;;
	--trust-owner)
		mapfile -t COMPREPLY < <(compgen -u -- "$cur")
		return 0
		;;
	--trust-group)
		mapfile -t COMPREPLY < <(compgen -g -- "$cur")
		return 0
		;;
	esac
	if [[ $cur == -* ]]; then
		mapfile -t COMPREPLY < <(compgen -W "$(_shmq_options "$tool" "$cmd")" -- "$cur")
	elif [[ $prev != --* ]] || ! _shmq_valued "$tool" "$cmd" | grep -qx -- "$prev"; then
		# a word that is not an option's value: a queue NAME (create makes a new one)
		[[ $cmd == create ]] || mapfile -t COMPREPLY < <(compgen -W "$(_shmq_names)" -- "$cur")
	fi
	return 0
}
complete -F _shmq shmq
